//! Video features on the 2 Hz grid (being built: see the video issue).

pub mod processor;
pub mod vjepa2;

use crate::cli::toolbox::FeaturesArgs;
use crate::error::{Error, Result};

/// `tribe features video`.
pub fn features_cli(_args: &FeaturesArgs) -> Result<()> {
    Err(Error::Other("tribe features video: not built yet".into()))
}
