//! Text features on the 2 Hz grid (being built: see the text issue).

use crate::cli::toolbox::FeaturesArgs;
use crate::error::{Error, Result};

/// `tribe features text`.
pub fn features_cli(_args: &FeaturesArgs) -> Result<()> {
    Err(Error::Other("tribe features text: not built yet".into()))
}
