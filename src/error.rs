//! One error type for the whole library, in the spirit of candle's: every variant carries the
//! context a user needs to act (file, line, column, tensor name, expected and found shape) and
//! maps to one exit code of the BIDS-App contract (DESIGN.md §2), so the binary edge never has to
//! guess what went wrong.
//!
//! Exit codes: the contract fixes 0, 1, 2, 16, 17, 18, 66 and 74. We add BSD sysexits for the
//! finer classes the contract leaves open, so that scripts (Slurm arrays, CI) can tell a bad
//! events.tsv from a missing model without parsing text. The full table is in README.md.

use std::path::PathBuf;

/// Exit codes (the `ExitCode` contract of DESIGN.md §2 plus sysexits for finer classes).
pub mod exit {
    pub const SUCCESS: i32 = 0;
    pub const RUNTIME: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const DATASET_INVALID: i32 = 16;
    pub const UNKNOWN_LEVEL: i32 = 17;
    pub const NO_DATA: i32 = 18;
    /// sysexits EX_DATAERR: input data is present but malformed (events.tsv, NIfTI, media).
    pub const DATA_ERROR: i32 = 65;
    pub const INPUT_MISSING: i32 = 66;
    /// sysexits EX_CANTCREAT: the output location itself is refused (inside the raw dataset).
    /// sysexits EX_UNAVAILABLE: a stimulus media file exists but cannot be decoded (corrupt,
    /// truncated, no usable stream, unsupported codec). Its own code, because its fix (re-export
    /// the file) differs from a malformed events.tsv's.
    pub const MEDIA_UNDECODABLE: i32 = 69;
    pub const OUTPUT_REFUSED: i32 = 73;
    pub const OUTPUT_NOT_WRITABLE: i32 = 74;
    /// sysexits EX_TEMPFAIL: the disk (or quota) is full. Nothing finished is lost and a rerun
    /// after freeing space resumes, so a scheduler may retry it.
    pub const OUTPUT_DISK_FULL: i32 = 75;
    /// sysexits EX_NOPERM: a path tried to leave the dataset (stim_file with `..`, symlink out).
    pub const PATH_ESCAPE: i32 = 77;
    /// sysexits EX_CONFIG: a model folder or checkpoint is unknown, incomplete or inconsistent.
    pub const MODEL_ERROR: i32 = 78;
    /// 128 + SIGINT, as shells report a Ctrl-C.
    pub const INTERRUPTED: i32 = 130;
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of media problem: lets tests and callers tell a truncated file from a missing track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaErrorKind {
    /// The container could not be opened or parsed (not media, corrupt header).
    Unreadable,
    /// The file stops early or a packet fails to decode.
    Truncated,
    /// No stream of the wanted kind (audio from a silent video, video from a wav).
    NoStream,
    /// The stream exists but decodes to nothing.
    Empty,
    /// FFmpeg in this build has no decoder for the codec.
    UnsupportedCodec,
    /// Geometry or timing we cannot represent faithfully.
    Unsupported,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- command line and configuration -------------------------------------------------
    #[error("{0}")]
    Usage(String),

    #[error("unknown analysis level '{0}': use 'participant' or 'group'")]
    UnknownAnalysisLevel(String),

    // ---- the input dataset ------------------------------------------------------------
    #[error("{path}: the dataset is not valid BIDS: {reason}\n  fix: {fix}")]
    DatasetInvalid {
        path: PathBuf,
        reason: String,
        fix: String,
    },

    #[error("no data matched the filters ({filters})\n  fix: {fix}")]
    NoDataMatched { filters: String, fix: String },

    /// A TSV (events.tsv, words TSV, participants.tsv) with a problem at a known place.
    #[error("{}:{line}{}: {message}\n  fix: {fix}", path.display(), column.as_ref().map(|c| format!(" (column '{c}')")).unwrap_or_default())]
    Tsv {
        path: PathBuf,
        line: usize,
        column: Option<String>,
        message: String,
        fix: String,
    },

    /// A JSON file (sidecar, dataset_description, filter file) that cannot be parsed or has wrong types.
    #[error("{}: {message}\n  fix: {fix}", path.display())]
    Json {
        path: PathBuf,
        message: String,
        fix: String,
    },

    #[error("{}: no timing for this run: {reason}\n  fix: {fix}", path.display())]
    MissingTiming {
        path: PathBuf,
        reason: String,
        fix: String,
    },

    #[error("{}: {what} is missing\n  fix: {fix}", path.display())]
    InputMissing {
        path: PathBuf,
        what: String,
        fix: String,
    },

    #[error("{}:{line}: stim_file '{stim_file}' points outside the dataset ({reason})\n  fix: give a path relative to BIDS_DIR/stimuli that stays inside the dataset", events.display())]
    PathEscapes {
        events: PathBuf,
        line: usize,
        stim_file: String,
        reason: String,
    },

    // ---- file formats -------------------------------------------------------------------
    #[error("{}: not a valid NIfTI file: {message}", path.display())]
    Nifti { path: PathBuf, message: String },

    #[error("{}: not a valid GIFTI file: {message}", path.display())]
    Gifti { path: PathBuf, message: String },

    #[error("{}: CIFTI-2: {message}", path.display())]
    Cifti { path: PathBuf, message: String },

    #[error("{}: {kind:?}: {message}", path.display())]
    Media {
        path: PathBuf,
        kind: MediaErrorKind,
        message: String,
    },

    // ---- models -------------------------------------------------------------------------
    #[error("{}: {message}\n  fix: {fix}", path.display())]
    Model {
        path: PathBuf,
        message: String,
        fix: String,
    },

    #[error("{}: not a usable checkpoint: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },

    #[error("tensor '{name}': expected shape {expected:?}, found {found:?}{}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        path: Option<PathBuf>,
    },

    #[error("tensor '{name}': expected dtype {expected}, found {found}")]
    DtypeMismatch {
        name: String,
        expected: String,
        found: String,
    },

    #[error("{}: tensor '{name}' is missing", path.display())]
    MissingTensor { name: String, path: PathBuf },

    #[error("{}: unexpected tensor '{name}' (strict loading: the checkpoint does not match the config)", path.display())]
    UnexpectedTensor { name: String, path: PathBuf },

    #[error("features for modality '{modality}': {message}")]
    FeatureShape { modality: String, message: String },

    #[error("tokenizer {}: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    // ---- analysis
    /// A contrast names a design column that does not exist.
    #[error("contrast '{expression}': unknown condition '{name}'\n  valid conditions: {}\n  fix: use one of the valid names (trial_type values of the events.tsv, or drift/constant columns)", valid.join(", "))]
    UnknownCondition {
        name: String,
        expression: String,
        valid: Vec<String>,
    },

    /// A contrast expression that cannot be read as a linear combination of columns.
    #[error(
        "contrast '{expression}': {message} (at character {position})\n  fix: write a linear combination of condition names, e.g. 'faces - places' or '0.5*faces + 0.5*places - objects'"
    )]
    ContrastSyntax {
        expression: String,
        position: usize,
        message: String,
    },

    /// The design matrix cannot be inverted: conditions without events, or collinear columns.
    #[error("design matrix is rank-deficient: {message}\n  fix: {fix}")]
    SingularDesign { message: String, fix: String },

    /// Analysis inputs that are present but unusable (empty events, NaN data, bad timing).
    #[error("{what}: {message}\n  fix: {fix}")]
    AnalysisInput {
        what: String,
        message: String,
        fix: String,
    },
    // ---- end analysis

    // ---- analysis-app
    /// A BIDS Stats Model given with `-m` that this app cannot use (wrong schema, F tests, ...).
    #[error("{}: not a usable BIDS Stats Model: {message}\n  fix: {fix}", path.display())]
    StatsModelInvalid {
        path: PathBuf,
        message: String,
        fix: String,
    },
    // ---- end analysis-app

    // ---- outputs ------------------------------------------------------------------------
    #[error("{}: the output folder may not be inside the input dataset (only BIDS_DIR/derivatives/<name> is allowed)\n  fix: choose {} or a folder outside {}", output.display(), suggestion.display(), input.display())]
    OutputInsideInput {
        output: PathBuf,
        input: PathBuf,
        suggestion: PathBuf,
    },

    #[error("{}: cannot write output: {source}\n  fix: check permissions and free space, or choose another OUTPUT_DIR", path.display())]
    OutputNotWritable {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{}: cannot write output: the disk or quota is full ({source})\n  fix: free space on that filesystem (or point OUTPUT_DIR / --work-dir elsewhere) and rerun: finished runs are kept and skipped", path.display())]
    OutputDiskFull {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("interrupted")]
    Interrupted,

    #[error("{0}")]
    Other(String),

    // ---- bids
    /// A BIDS entity label that cannot go into a file name (`desc-faces-vs-houses`).
    #[error(
        "invalid BIDS label {entity}-{value}: {reason}\n  fix: use only letters, digits and '+' (tribe_bids::bids::entities::sanitize_label does that)"
    )]
    InvalidLabel {
        entity: String,
        value: String,
        reason: String,
    },
    // ---- model
    /// A features file for `tribe encode` (safetensors of (B, L, D, T) arrays) that cannot be used.
    #[error("{}: {message}\n  fix: {fix}", path.display())]
    FeaturesFile {
        path: PathBuf,
        message: String,
        fix: String,
    },
}

impl Error {
    /// The process exit code this error maps to (README.md has the table).
    pub fn exit_code(&self) -> i32 {
        use Error::*;
        match self {
            Usage(_) => exit::USAGE,
            UnknownAnalysisLevel(_) => exit::UNKNOWN_LEVEL,
            DatasetInvalid { .. } | MissingTiming { .. } => exit::DATASET_INVALID,
            NoDataMatched { .. } => exit::NO_DATA,
            Tsv { .. } | Json { .. } | Nifti { .. } | Gifti { .. } | Cifti { .. } => {
                exit::DATA_ERROR
            }
            Media { .. } => exit::MEDIA_UNDECODABLE,
            FeatureShape { .. } => exit::DATA_ERROR,
            InputMissing { .. } => exit::INPUT_MISSING,
            Io { .. } => exit::INPUT_MISSING,
            PathEscapes { .. } => exit::PATH_ESCAPE,
            Model { .. }
            | Checkpoint { .. }
            | ShapeMismatch { .. }
            | DtypeMismatch { .. }
            | MissingTensor { .. }
            | UnexpectedTensor { .. }
            | Tokenizer { .. } => exit::MODEL_ERROR,
            OutputInsideInput { .. } => exit::OUTPUT_REFUSED,
            OutputNotWritable { .. } => exit::OUTPUT_NOT_WRITABLE,
            OutputDiskFull { .. } => exit::OUTPUT_DISK_FULL,
            Interrupted => exit::INTERRUPTED,
            Candle(_) | Other(_) => exit::RUNTIME,
            // ---- bids
            InvalidLabel { .. } => exit::USAGE,
            FeaturesFile { .. } => exit::DATA_ERROR,
            // ---- analysis
            UnknownCondition { .. } | ContrastSyntax { .. } => exit::USAGE,
            SingularDesign { .. } | AnalysisInput { .. } => exit::DATA_ERROR,
            // ---- analysis-app
            StatsModelInvalid { .. } => exit::MODEL_ERROR,
        }
    }

    /// Writing an output failed: a full disk or quota (ENOSPC, EDQUOT) gets its own variant and
    /// exit code, because its fix (free space, then rerun) differs from a permission problem.
    pub fn output_write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        let full = matches!(
            source.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        );
        if full {
            Error::OutputDiskFull { path, source }
        } else {
            Error::OutputNotWritable { path, source }
        }
    }

    /// Helper for the common "reading this path failed" case.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
