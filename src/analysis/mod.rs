//! Analyses of predicted BOLD: first-level GLM contrasts and ICA network maps.
//!
//! The pieces follow nilearn's first-level pipeline so that maps agree with a nilearn analysis
//! of the same predicted BOLD: [`hrf`] and [`design`] build the design matrix, [`contrast`]
//! reads contrast expressions, [`smdl`] reads BIDS Stats Models, [`glm`] fits OLS/AR(1) and
//! computes effect/variance/z maps, [`stats`] turns t into z. [`ica`] is scikit-learn's FastICA
//! and [`networks`] labels its components with in-silico probe contrasts.

pub mod contrast;
pub mod design;
pub mod glm;
pub mod hrf;
pub mod ica;
pub mod networks;
pub mod probes;
pub mod smdl;
pub mod stats;
