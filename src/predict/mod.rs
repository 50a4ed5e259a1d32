//! From features to predicted BOLD: 100 s segments and alignment to the acquisition.

pub mod segments;

use crate::cli::toolbox::PredictArgs;
use crate::error::{Error, Result};

/// `tribe predict`: one stimulus file to fsaverage5 GIFTI (joins features and brain model).
pub fn predict_cli(_args: &PredictArgs) -> Result<()> {
    Err(Error::Other("tribe predict: not built yet".into()))
}

pub mod alignment;
pub mod run;
