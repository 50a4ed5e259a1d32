//! `tribe-bids BIDS_DIR OUTPUT_DIR {participant,group} [options]` (DESIGN.md §2, contract).
//!
//! Parsing happens in two steps, as in ripgrep: [`RawArgs`] is exactly what clap read (both the
//! BIDS-Apps underscore spellings and the nipreps dash spellings), and [`RunConfig::from_raw`]
//! turns it into a validated configuration (labels stripped of their prefixes, paths checked,
//! the output folder refused inside the raw dataset). Everything downstream takes a
//! `RunConfig`, so no later stage re-validates user input.

use std::path::{Path, PathBuf};

use clap::{ArgAction, Parser};

use crate::error::{Error, Result};

/// What clap reads, before any validation.
#[derive(Debug, Parser)]
#[command(
    name = "tribe-bids",
    version,
    about = "TRIBE v2 brain-encoding predictions for a BIDS dataset (a BIDS-App)",
    long_about = "Reads each run's events.tsv, runs TRIBE v2 (LLaMA-3.2, Wav2Vec-BERT 2.0 and V-JEPA2 features, \
then the brain model) and writes BIDS-Derivatives: predicted BOLD on fsaverage5 (GIFTI per hemisphere), optional \
CIFTI-2 and subcortical NIfTI, contrast and ICA maps, and an HTML report. Never talks to the network.",
    after_help = "Exit codes: 0 success, 1 runtime failure, 2 usage error, 16 input dataset invalid, 17 unknown \
analysis level, 18 filters matched no data, 65 malformed input data, 66 input missing or unreadable, 73 output \
folder refused, 74 output not writable, 77 path escapes the dataset, 78 model folder, checkpoint or stats model (-m) error, 130 interrupted."
)]
pub struct RawArgs {
    /// The root of the BIDS dataset (read only; never modified).
    pub bids_dir: PathBuf,
    /// Where derivatives go: outside BIDS_DIR, or BIDS_DIR/derivatives/NAME.
    pub output_dir: PathBuf,
    /// `participant` (per-subject predictions) or `group` (averages, group contrasts, model ICA).
    pub analysis_level: String,

    // ---- filtering BIDS queries ----
    /// Subject labels to process (with or without "sub-"); default: all.
    #[arg(long = "participant-label", alias = "participant_label", num_args = 1.., value_name = "LABEL")]
    pub participant_label: Vec<String>,
    /// Session labels (with or without "ses-").
    #[arg(long = "session-label", alias = "session_label", alias = "session-id", num_args = 1.., value_name = "LABEL")]
    pub session_label: Vec<String>,
    /// Task labels (with or without "task-").
    #[arg(long = "task-label", alias = "task_label", alias = "task-id", short = 't', num_args = 1.., value_name = "LABEL")]
    pub task_label: Vec<String>,
    /// Run labels (with or without "run-").
    #[arg(long = "run-label", alias = "run_label", alias = "run-id", num_args = 1.., value_name = "LABEL")]
    pub run_label: Vec<String>,
    /// fMRIPrep-style JSON of PyBIDS filters, e.g. {"bold": {"session": "01"}}.
    #[arg(
        long = "bids-filter-file",
        alias = "bids_filter_file",
        value_name = "FILE"
    )]
    pub bids_filter_file: Option<PathBuf>,
    /// Skip the dataset checks beyond what the app needs to run.
    #[arg(
        long = "skip-bids-validation",
        alias = "skip_bids_validation",
        alias = "skip_bids_validator"
    )]
    pub skip_bids_validation: bool,

    // ---- models and compute ----
    /// Folder holding the model folders (tribev2, Llama-3.2-3B, w2v-bert-2.0, vjepa2-vitg-fpc64-256).
    #[arg(
        long = "models-dir",
        alias = "models_dir",
        env = "TRIBE_MODELS_DIR",
        value_name = "DIR"
    )]
    pub models_dir: Option<PathBuf>,
    /// auto (CUDA when built with it and present, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Feature cache and temporary files; safe to share between runs and array tasks.
    #[arg(short = 'w', long = "work-dir", alias = "work_dir", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// CPU threads for the whole job (default: the CPUs this process may use). The brain-model
    /// stage runs up to N/2 participants at once, sharing one copy of the model.
    #[arg(
        long,
        alias = "nthreads",
        alias = "n_cpus",
        alias = "n-cpus",
        value_name = "N"
    )]
    pub nprocs: Option<usize>,
    /// Memory budget in GB: caps how many participants the brain-model stage runs at once, by
    /// the estimated memory of one run (one window of features and activations, the output
    /// queue, and the whole run only with --cifti-output or --run-ica).
    #[arg(long = "mem-gb", alias = "mem_gb", value_name = "N")]
    pub mem_gb: Option<f64>,
    /// Modalities to use; the others are treated as absent (SPEC §1.2).
    #[arg(long, value_delimiter = ',', default_value = "text,audio,video")]
    pub modalities: Vec<String>,
    /// Text context: exact (the reference, per-word contexts) or fast (strided windows).
    #[arg(long = "text-context", alias = "text_context", default_value = "exact")]
    pub text_context: String,
    /// A second TRIBE checkpoint whose outputs are the voxels of the subcortical mask (SPEC §9);
    /// written as a 4-D NIfTI on the 2 mm MNI grid next to the GIFTI outputs.
    #[arg(
        long = "subcortical-checkpoint",
        alias = "subcortical_checkpoint",
        value_name = "DIR"
    )]
    pub subcortical_checkpoint: Option<PathBuf>,
    /// Row of a multi-subject predictor (default: the unseen-subject row).
    #[arg(long = "subject-index", alias = "subject_index", value_name = "N")]
    pub subject_index: Option<usize>,

    // ---- outputs and analyses ----
    /// Also write a CIFTI-2 dtseries of both hemispheres.
    #[arg(long = "cifti-output", alias = "cifti_output")]
    pub cifti_output: bool,
    /// A contrast NAME=EXPR, e.g. facesVsPlaces=faces-places (repeatable).
    #[arg(long, value_name = "NAME=EXPR")]
    pub contrast: Vec<String>,
    /// A BIDS Stats Models JSON (FitLins convention).
    #[arg(short = 'm', long = "model", value_name = "STATS_MODEL.json")]
    pub stats_model: Option<PathBuf>,
    /// Number of ICA network components.
    #[arg(
        long = "ica-components",
        alias = "ica_components",
        default_value_t = 5,
        value_name = "N"
    )]
    pub ica_components: usize,
    /// Also decompose each run's predicted time series with ICA.
    #[arg(long = "run-ica", alias = "run_ica")]
    pub run_ica: bool,

    // ---- behaviour ----
    /// Print the plan and write nothing.
    #[arg(long = "dry-run", alias = "dry_run")]
    pub dry_run: bool,
    /// Redo every run, even when its outputs and provenance match.
    #[arg(long)]
    pub force: bool,
    /// Accepted for compatibility: the app never talks to the network.
    #[arg(long, hide = true)]
    pub notrack: bool,
    /// More logging: -v info, -vv debug.
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalysisLevel {
    Participant,
    Group,
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(Error::Usage(format!(
                    "--device '{s}': use auto, cpu, cuda or cuda:N"
                ))),
            },
        }
    }

    /// The candle device. `Auto` falls back to CPU when CUDA is not built in or not present.
    pub fn to_device(self) -> Result<candle_core::Device> {
        match self {
            Self::Cpu => Ok(candle_core::Device::Cpu),
            Self::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::Usage(
                        "--device cuda: this build has no CUDA support (rebuild with --features cuda) or no GPU is visible".into(),
                    ));
                }
                Ok(candle_core::Device::new_cuda(n)?)
            }
            Self::Auto => {
                if candle_core::utils::cuda_is_available() {
                    Ok(candle_core::Device::new_cuda(0).unwrap_or(candle_core::Device::Cpu))
                } else {
                    Ok(candle_core::Device::Cpu)
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Modality {
    Text,
    Audio,
    Video,
}

impl Modality {
    pub const ALL: [Modality; 3] = [Modality::Text, Modality::Audio, Modality::Video];
    pub fn name(self) -> &'static str {
        match self {
            Modality::Text => "text",
            Modality::Audio => "audio",
            Modality::Video => "video",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextContext {
    Exact,
    Fast,
}

/// A contrast given on the command line as NAME=EXPR.
#[derive(Debug, Clone, PartialEq)]
pub struct ContrastSpec {
    pub name: String,
    pub expr: String,
}

/// The validated configuration every stage takes.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub bids_dir: PathBuf,
    pub output_dir: PathBuf,
    pub level: AnalysisLevel,
    pub participants: Vec<String>,
    pub sessions: Vec<String>,
    pub tasks: Vec<String>,
    pub runs: Vec<String>,
    pub bids_filter_file: Option<PathBuf>,
    pub skip_validation: bool,
    pub models_dir: PathBuf,
    pub device: DeviceChoice,
    pub work_dir: PathBuf,
    pub nprocs: usize,
    pub mem_gb: Option<f64>,
    pub modalities: Vec<Modality>,
    pub text_context: TextContext,
    pub subcortical_checkpoint: Option<PathBuf>,
    pub subject_index: Option<usize>,
    pub cifti_output: bool,
    pub contrasts: Vec<ContrastSpec>,
    pub stats_model: Option<PathBuf>,
    pub ica_components: usize,
    pub run_ica: bool,
    pub dry_run: bool,
    pub force: bool,
    pub verbosity: u8,
    /// The command line as given, for provenance.
    pub command_line: Vec<String>,
}

fn strip_prefix_labels(labels: &[String], prefix: &str) -> Vec<String> {
    labels
        .iter()
        .flat_map(|l| l.split_whitespace())
        .map(|l| l.strip_prefix(prefix).unwrap_or(l).to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Absolute, lexically normalized path (no filesystem access: the output may not exist yet).
pub fn absolute(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Resolve symlinks of the longest existing ancestor, so `/data/link/out` is compared by where it
/// really lands (a symlink into the raw dataset must not bypass the check).
fn resolved(p: &Path) -> PathBuf {
    let abs = absolute(p);
    let mut existing = abs.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    out
}

/// BIDS-Apps rule (BIDS.md §1.2, fMRIPrep): the output may live at BIDS_DIR/derivatives/NAME
/// and nowhere else inside the raw dataset, so the input is never modified.
pub fn check_output_location(bids_dir: &Path, output_dir: &Path) -> Result<()> {
    let raw = resolved(bids_dir);
    let out = resolved(output_dir);
    let suggestion = raw.join("derivatives").join("tribe-bids");
    if out == raw || raw.starts_with(&out) {
        return Err(Error::OutputInsideInput {
            output: output_dir.to_path_buf(),
            input: bids_dir.to_path_buf(),
            suggestion,
        });
    }
    if let Ok(rel) = out.strip_prefix(&raw) {
        let comps: Vec<_> = rel.components().collect();
        let ok = comps.len() >= 2 && comps[0].as_os_str() == "derivatives";
        if !ok {
            return Err(Error::OutputInsideInput {
                output: output_dir.to_path_buf(),
                input: bids_dir.to_path_buf(),
                suggestion,
            });
        }
    }
    Ok(())
}

fn default_models_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/tribe-bids/models")
}

impl RunConfig {
    /// Validate raw arguments. Checks here are the ones that need no dataset parsing.
    pub fn from_raw(raw: RawArgs, command_line: Vec<String>) -> Result<Self> {
        let level = match raw.analysis_level.as_str() {
            "participant" => AnalysisLevel::Participant,
            "group" => AnalysisLevel::Group,
            other => return Err(Error::UnknownAnalysisLevel(other.to_string())),
        };
        if !raw.bids_dir.is_dir() {
            return Err(Error::InputMissing {
                path: raw.bids_dir.clone(),
                what: "the BIDS dataset folder".into(),
                fix: "give the root of a BIDS dataset (the folder holding dataset_description.json); in a container, check the -v/-B mount".into(),
            });
        }
        check_output_location(&raw.bids_dir, &raw.output_dir)?;
        // Default work folder: beside the output (so reruns find the feature cache), unless that is
        // inside the raw dataset (output at BIDS_DIR/derivatives/<name>); then the temp folder.
        let work_dir = match &raw.work_dir {
            Some(w) => absolute(w),
            None => {
                let beside =
                    absolute(&absolute(&raw.output_dir).join("..").join("tribe-bids-work"));
                if resolved(&beside).starts_with(resolved(&raw.bids_dir)) {
                    std::env::temp_dir().join("tribe-bids-work")
                } else {
                    beside
                }
            }
        };
        if resolved(&work_dir).starts_with(resolved(&raw.bids_dir)) {
            return Err(Error::Usage(format!(
                "--work-dir {}: the work folder may not be inside the BIDS dataset {}",
                work_dir.display(),
                raw.bids_dir.display()
            )));
        }
        let device = DeviceChoice::parse(&raw.device)?;
        let mut modalities = Vec::new();
        for m in &raw.modalities {
            let m = match m.trim().to_ascii_lowercase().as_str() {
                "text" => Modality::Text,
                "audio" => Modality::Audio,
                "video" => Modality::Video,
                "" => continue,
                other => {
                    return Err(Error::Usage(format!(
                        "--modalities: unknown modality '{other}' (use text, audio, video)"
                    )));
                }
            };
            if !modalities.contains(&m) {
                modalities.push(m);
            }
        }
        if modalities.is_empty() {
            return Err(Error::Usage(
                "--modalities: keep at least one of text, audio, video".into(),
            ));
        }
        modalities.sort();
        let text_context = match raw.text_context.as_str() {
            "exact" => TextContext::Exact,
            "fast" => TextContext::Fast,
            other => {
                return Err(Error::Usage(format!(
                    "--text-context '{other}': use exact or fast"
                )));
            }
        };
        let mut contrasts = Vec::new();
        for c in &raw.contrast {
            match c.split_once('=') {
                Some((n, e)) if !n.trim().is_empty() && !e.trim().is_empty() => {
                    let name = n.trim().to_string();
                    if !name.chars().all(|ch| ch.is_ascii_alphanumeric()) {
                        return Err(Error::Usage(format!(
                            "--contrast {c}: the name must be alphanumeric (it becomes the BIDS entity contrast-{name})"
                        )));
                    }
                    contrasts.push(ContrastSpec {
                        name,
                        expr: e.trim().to_string(),
                    })
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "--contrast '{c}': write NAME=EXPR, e.g. facesVsPlaces=faces-places"
                    )));
                }
            }
        }
        if raw.ica_components == 0 {
            return Err(Error::Usage("--ica-components must be at least 1".into()));
        }
        if let Some(f) = &raw.bids_filter_file
            && !f.is_file()
        {
            return Err(Error::InputMissing {
                path: f.clone(),
                what: "the --bids-filter-file".into(),
                fix: "check the path".into(),
            });
        }
        let nprocs = raw
            .nprocs
            .or_else(|| {
                // A scheduler's or user's RAYON_NUM_THREADS is honoured when --nprocs is absent.
                std::env::var("RAYON_NUM_THREADS")
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|&n| n > 0)
            })
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1);
        Ok(RunConfig {
            bids_dir: absolute(&raw.bids_dir),
            output_dir: absolute(&raw.output_dir),
            level,
            participants: strip_prefix_labels(&raw.participant_label, "sub-"),
            sessions: strip_prefix_labels(&raw.session_label, "ses-"),
            tasks: strip_prefix_labels(&raw.task_label, "task-"),
            runs: strip_prefix_labels(&raw.run_label, "run-"),
            bids_filter_file: raw.bids_filter_file,
            skip_validation: raw.skip_bids_validation,
            models_dir: raw
                .models_dir
                .map(|p| absolute(&p))
                .unwrap_or_else(default_models_dir),
            device,
            work_dir,
            nprocs,
            mem_gb: raw.mem_gb,
            modalities,
            text_context,
            subcortical_checkpoint: raw.subcortical_checkpoint.map(|p| absolute(&p)),
            subject_index: raw.subject_index,
            cifti_output: raw.cifti_output,
            contrasts,
            stats_model: raw.stats_model,
            ica_components: raw.ica_components,
            run_ica: raw.run_ica,
            dry_run: raw.dry_run,
            force: raw.force,
            verbosity: raw.verbose,
            command_line,
        })
    }
}

/// Run a validated configuration.
pub fn run(cfg: &RunConfig) -> Result<()> {
    let (layout, runs) = crate::cli::plan::select_runs(cfg)?;
    if cfg.level == AnalysisLevel::Participant {
        // Contrast typos and bad stats models fail here, before any model loads.
        crate::cli::first_level::check_requests(cfg, &runs)?;
    }
    if cfg.dry_run {
        print!("{}", crate::cli::plan::plan_table(cfg, &runs));
        return Ok(());
    }
    match cfg.level {
        AnalysisLevel::Participant => {
            let outcomes =
                crate::cli::participant::run_participants(cfg, layout.description(), &runs)?;
            let (table, code) = crate::cli::participant::summary(&outcomes);
            eprint!("{table}");
            let log = format!("{}\n{table}", cfg.command_line.join(" "));
            // A log that cannot be written (full or read-only disk) must not hide the run's own
            // error, which names the output that failed; it only fails a job that otherwise worked.
            let logged = crate::cli::participant::write_log(&cfg.output_dir, &log);
            match outcomes.into_iter().find_map(|(_, o)| match o {
                crate::cli::participant::Outcome::Failed(e) => Some(e),
                _ => None,
            }) {
                Some(e) if code != 0 => {
                    if let Err(le) = logged {
                        tracing::warn!("the log was not written: {le}");
                    }
                    Err(e)
                }
                _ => logged,
            }
        }
        AnalysisLevel::Group => {
            crate::cli::group::run_group(cfg)?;
            // The subject reports show the group ICA networks, which exist only now: refresh them.
            let mut outcomes = Vec::new();
            crate::cli::report::write_reports(cfg, &runs, &mut outcomes);
            match outcomes.into_iter().find_map(|(_, o)| match o {
                crate::cli::participant::Outcome::Failed(e) => Some(e),
                _ => None,
            }) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunConfig> {
        let raw = RawArgs::try_parse_from(args).map_err(|e| Error::Usage(e.to_string()))?;
        RunConfig::from_raw(raw, args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn both_spellings_and_prefix_stripping() {
        let d = tempfile::tempdir().unwrap();
        let bids = d.path().join("ds");
        std::fs::create_dir(&bids).unwrap();
        let out = d.path().join("out");
        let (b, o) = (bids.to_str().unwrap(), out.to_str().unwrap());
        let c = parse(&[
            "tribe-bids",
            b,
            o,
            "participant",
            "--participant_label",
            "sub-01",
            "02",
        ])
        .unwrap();
        assert_eq!(c.participants, vec!["01", "02"]);
        let c = parse(&[
            "tribe-bids",
            b,
            o,
            "participant",
            "--participant-label",
            "01",
            "--session-label",
            "ses-a",
        ])
        .unwrap();
        assert_eq!(c.participants, vec!["01"]);
        assert_eq!(c.sessions, vec!["a"]);
        let c = parse(&[
            "tribe-bids",
            b,
            o,
            "participant",
            "--modalities",
            "video,text",
            "--device",
            "cuda:1",
        ])
        .unwrap();
        assert_eq!(c.modalities, vec![Modality::Text, Modality::Video]);
        assert_eq!(c.device, DeviceChoice::Cuda(1));
    }

    #[test]
    fn unknown_level_is_17() {
        let d = tempfile::tempdir().unwrap();
        let e = parse(&[
            "tribe-bids",
            d.path().to_str().unwrap(),
            "/tmp/x",
            "subject",
        ])
        .unwrap_err();
        assert_eq!(e.exit_code(), 17);
    }

    #[test]
    fn output_location_rules() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("ds");
        std::fs::create_dir(&raw).unwrap();
        assert!(check_output_location(&raw, &raw.join("derivatives/tribe-bids")).is_ok());
        assert!(check_output_location(&raw, &d.path().join("out")).is_ok());
        for bad in [
            raw.clone(),
            raw.join("sub-01"),
            raw.join("derivatives"),
            d.path().to_path_buf(),
        ] {
            let e = check_output_location(&raw, &bad).unwrap_err();
            assert_eq!(e.exit_code(), 73, "{bad:?}");
        }
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path().to_str().unwrap();
        for extra in [
            &["--device", "tpu"][..],
            &["--modalities", "smell"],
            &["--text-context", "slow"],
            &["--contrast", "a-b"],
        ] {
            let mut args = vec!["tribe-bids", b, "/tmp/tribe-out-x", "participant"];
            args.extend_from_slice(extra);
            assert_eq!(parse(&args).unwrap_err().exit_code(), 2, "{extra:?}");
        }
    }
}
