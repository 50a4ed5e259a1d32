//! Analyses of predicted BOLD: first-level GLM contrasts and ICA network maps.
