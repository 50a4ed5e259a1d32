//! The BIDS layer (ours): dataset layout, entities, sidecar inheritance, events, derivatives naming.

pub mod derivatives;
