//! `tribe`: the toolbox binary for single files and checks (DESIGN.md §2, contract).
//!
//! Each subcommand is a thin shell over a library function, so that what `tribe` writes is by
//! construction what the BIDS-App computes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::Result;

#[derive(Debug, Parser)]
#[command(
    name = "tribe",
    version,
    about = "TRIBE v2 toolbox: features, brain model, inspection"
)]
pub struct ToolboxCli {
    /// More logging (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the brain model alone on a features file (no segmentation).
    Encode(EncodeArgs),
    /// Extract one modality's features onto the 2 Hz grid.
    Features {
        modality: Modality,
        #[command(flatten)]
        args: FeaturesArgs,
    },
    /// Say what a model folder or checkpoint holds.
    Inspect {
        /// A model folder (tribev2, Llama, w2v-BERT, V-JEPA2) or a checkpoint file.
        dir: PathBuf,
    },
    /// Predict fsaverage5 responses to one stimulus file.
    Predict(PredictArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Modality {
    Text,
    Audio,
    Video,
}

#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Folder with config.yaml + best.ckpt (release format) or model.safetensors.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// safetensors with float32 `text`, `audio`, `video`, each (B, L, D, T); a missing key = absent modality.
    #[arg(long)]
    pub features: PathBuf,
    /// Output safetensors with `prediction` (B, n_outputs, n_output_timesteps).
    #[arg(long)]
    pub out: PathBuf,
    /// Row of a multi-subject predictor; default: the unseen-subject row.
    #[arg(long)]
    pub subject_index: Option<usize>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute precision: f32 (the parity-checked default) or bf16 (GPU speed; about 1e-2
    /// relative error; on the CPU it runs on slow generic kernels). The output is f32 either way.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Precision,
}

/// `--dtype` of `tribe encode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    F32,
    Bf16,
}

#[derive(Debug, Args)]
pub struct FeaturesArgs {
    /// The extractor's HF model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// The media file, or for text the words TSV (`onset duration word`).
    #[arg(long)]
    pub input: PathBuf,
    /// Start of the window in seconds (the stimulus starts at 0).
    #[arg(long, default_value_t = 0.0)]
    pub start: f64,
    /// Window length in seconds (default: to the end of the stimulus).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Output safetensors holding the modality's name as key, float32 (L, D, n_bins).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Text only: `exact` (reference, per-word contexts) or `fast` (strided windows).
    #[arg(long, default_value = "exact")]
    pub text_context: String,
    /// Text only: the LLaMA's compute dtype. `auto` is what the reference does: f32 on the CPU,
    /// bf16 on a GPU (transformers' `dtype="auto"` for the bf16 checkpoint).
    #[arg(long, default_value = "auto", value_parser = ["auto", "f32", "bf16"])]
    pub dtype: String,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    #[arg(long, group = "stim")]
    pub video: Option<PathBuf>,
    #[arg(long, group = "stim")]
    pub audio: Option<PathBuf>,
    #[arg(long, group = "stim")]
    pub words: Option<PathBuf>,
    #[arg(long, env = "TRIBE_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Output prefix: writes PREFIX_hemi-{L,R}.func.gii.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Run a parsed toolbox command.
pub fn run(cli: ToolboxCli) -> Result<()> {
    match cli.command {
        Command::Encode(a) => crate::model::encode_cli(&a),
        Command::Inspect { dir } => crate::model::inspect_cli(&dir),
        Command::Features {
            modality: Modality::Text,
            args,
        } => crate::features::text::features_cli(&args),
        Command::Features {
            modality: Modality::Audio,
            args,
        } => crate::features::audio::features_cli(&args),
        Command::Features {
            modality: Modality::Video,
            args,
        } => crate::features::video::features_cli(&args),
        Command::Predict(a) => crate::predict::predict_cli(&a),
    }
}
