//! Optional recording of per-stage tensors, named as in the golden fixture
//! `all_b2_intermediates.safetensors`, so that a parity failure points at its stage.

use std::collections::BTreeMap;

use candle_core::Tensor;

/// Named intermediate tensors of one forward pass (empty and free when disabled).
#[derive(Debug, Default)]
pub struct Trace {
    enabled: bool,
    pub tensors: BTreeMap<String, Tensor>,
}

impl Trace {
    /// A trace that records nothing (the normal forward).
    pub fn off() -> Self {
        Trace::default()
    }

    /// A trace that keeps every stage.
    pub fn on() -> Self {
        Trace {
            enabled: true,
            tensors: BTreeMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Keep `t` under `name` (a cheap reference-counted clone).
    pub fn record(&mut self, name: &str, t: &Tensor) {
        if self.enabled {
            self.tensors.insert(name.to_string(), t.clone());
        }
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }
}
