//! The per-subject HTML report and its figures.
