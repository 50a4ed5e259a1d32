//! Feature extractors (text, audio, video) onto the 2 Hz grid, and the feature cache.

pub mod audio;
pub mod fbank;
pub mod layers;
pub mod resample;
pub mod text;
pub mod torch_ops;
pub mod video;
pub mod w2vbert;
