//! Feature extractors (text, audio, video) onto the 2 Hz grid, and the feature cache.

pub mod attention;
pub mod audio;
pub mod blas;
pub mod cache;
pub mod context;
pub mod decoder;
pub mod fbank;
pub mod fused_cpu;
pub mod layers;
pub mod matmul;
pub mod resample;
pub mod text;
pub mod text_grid;
pub mod tokenize;
pub mod torch_ops;
pub mod video;
pub mod w2vbert;
