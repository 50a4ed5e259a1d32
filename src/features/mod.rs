//! Feature extractors (text, audio, video) onto the 2 Hz grid, and the feature cache.

pub mod layers;
pub mod text;
pub mod audio;
pub mod fbank;
pub mod resample;
pub mod torch_ops;
pub mod w2vbert;
pub mod video;
