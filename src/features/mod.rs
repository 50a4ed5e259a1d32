//! Feature extractors (text, audio, video) onto the 2 Hz grid, and the feature cache.

pub mod attention;
pub mod audio;
pub mod context;
pub mod decoder;
pub mod layers;
pub mod matmul;
pub mod text;
pub mod text_grid;
pub mod tokenize;
pub mod video;
