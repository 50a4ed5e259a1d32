//! tribe-bids: Meta FAIR's TRIBE v2 brain-encoding model as a BIDS-App.
//!
//! The crate follows the data: [`bids`] reads a dataset, [`stimulus`] turns a run's events into
//! what was seen and heard, [`features`] runs the three frozen extractors onto the 2 Hz grid,
//! [`model`] is the TRIBE v2 brain model, [`predict`] cuts runs into 100 s windows and aligns the
//! 1 Hz predictions to the acquisition, [`formats`] writes GIFTI/NIfTI/CIFTI, [`analysis`] and
//! [`report`] turn predictions into maps and pages, and [`cli`] is the command line.

pub mod analysis;
pub mod bids;
pub mod cli;
pub mod error;
pub mod features;
pub mod formats;
pub mod model;
pub mod predict;
pub mod report;
pub mod stimulus;
pub mod util;

pub use error::{Error, Result};

/// The version string written into provenance (dataset_description.json, sidecars).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
