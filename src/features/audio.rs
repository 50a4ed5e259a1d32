//! Audio features on the 2 Hz grid (being built: see the audio issue).

use crate::cli::toolbox::FeaturesArgs;
use crate::error::{Error, Result};

/// `tribe features audio`.
pub fn features_cli(_args: &FeaturesArgs) -> Result<()> {
    Err(Error::Other("tribe features audio: not built yet".into()))
}
