//! Code shared by the benches.
pub mod full_model;
