//! The per-subject HTML report and its figures.
//!
//! Figures are drawn in Rust (no matplotlib in the container): [`mesh`] holds the surfaces,
//! [`render`] rasterises one view, [`figure`] lays out four views and a colour bar, [`carpet`]
//! draws predicted BOLD as a volumes x vertices image, [`fsaverage`] embeds the surfaces, [`font`] and [`colormap`] support them,
//! and [`html`] assembles the per-subject page.

pub mod carpet;
pub mod colormap;
pub mod figure;
pub mod font;
pub mod fsaverage;
pub mod html;
pub mod mesh;
pub mod render;
