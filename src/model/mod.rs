//! The TRIBE v2 brain model (FmriEncoder) and its checkpoint loading.

use std::path::Path;

use crate::cli::toolbox::EncodeArgs;
use crate::error::{Error, Result};

/// `tribe encode`.
pub fn encode_cli(_args: &EncodeArgs) -> Result<()> {
    Err(Error::Other("tribe encode: not built yet".into()))
}

/// `tribe inspect`.
pub fn inspect_cli(_dir: &Path) -> Result<()> {
    Err(Error::Other("tribe inspect: not built yet".into()))
}

pub mod models_dir;
