//! Which hidden layers become TRIBE features (SPEC §5.2).
//!
//! The reference keeps at most 20 hidden states (text and video only), then averages them in
//! groups cut at the fractions [0.5, 0.75, 1.0] of the depth. Getting these indices wrong shifts
//! every feature, so both rules are written exactly as neuralset computes them.

/// `_layer_subselection`: when a model has more than `max_layers` hidden states, keep indices
/// `int(round(x))` for `x in linspace(0, n - 1, max_layers)` (Python rounding, half to even).
/// Returns the kept hidden-state indices in order.
pub fn subselect(n_hidden: usize, max_layers: usize) -> Vec<usize> {
    if n_hidden <= max_layers || max_layers == 0 {
        return (0..n_hidden).collect();
    }
    let last = (n_hidden - 1) as f64;
    (0..max_layers)
        .map(|i| {
            // numpy linspace: start + i * step, with the last point set exactly to stop.
            let x = if i + 1 == max_layers { last } else { i as f64 * (last / (max_layers - 1) as f64) };
            x.round_ties_even() as usize
        })
        .collect()
}

/// `_aggregate_layers` with `group_mean`: `idx = unique(int(f * (n - 1)) for f in fractions)`,
/// `idx[-1] += 1`, group k averages positions `idx[k]..idx[k+1]`. Returns, per group, the
/// positions (into the list of `n` layers given) to average.
pub fn group_mean_groups(n: usize, fractions: &[f64]) -> Vec<std::ops::Range<usize>> {
    let mut idx: Vec<usize> = fractions.iter().map(|f| (f * (n.saturating_sub(1)) as f64) as usize).collect();
    idx.sort_unstable();
    idx.dedup();
    if let Some(last) = idx.last_mut() {
        *last += 1;
    }
    idx.windows(2).map(|w| w[0]..w[1]).collect()
}

/// The reference's layer fractions (`data.layers_to_use`).
pub const DEFAULT_FRACTIONS: [f64; 3] = [0.5, 0.75, 1.0];
/// The reference's `cache_n_layers`.
pub const DEFAULT_MAX_LAYERS: usize = 20;

/// The hidden-state index groups a model with `n_hidden` states contributes, after optional
/// subselection (`max_layers = None` for audio, which skips it).
pub fn hidden_state_groups(n_hidden: usize, max_layers: Option<usize>, fractions: &[f64]) -> Vec<Vec<usize>> {
    let kept = match max_layers {
        Some(m) => subselect(n_hidden, m),
        None => (0..n_hidden).collect(),
    };
    group_mean_groups(kept.len(), fractions).into_iter().map(|r| kept[r].to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §5.2 table.
    #[test]
    fn released_models_groups() {
        let f = &DEFAULT_FRACTIONS;
        assert_eq!(hidden_state_groups(29, Some(20), f), vec![vec![13, 15, 16, 18, 19], vec![21, 22, 24, 25, 27, 28]]);
        assert_eq!(hidden_state_groups(41, Some(20), f), vec![vec![19, 21, 23, 25, 27], vec![29, 32, 34, 36, 38, 40]]);
        assert_eq!(hidden_state_groups(25, None, f), vec![(12..18).collect::<Vec<_>>(), (18..25).collect()]);
    }

    /// Without subselection (SPEC §5.2, "for reference only").
    #[test]
    fn groups_without_subselection() {
        let f = &DEFAULT_FRACTIONS;
        assert_eq!(hidden_state_groups(29, None, f), vec![(14..21).collect::<Vec<_>>(), (21..29).collect()]);
        assert_eq!(hidden_state_groups(41, None, f), vec![(20..30).collect::<Vec<_>>(), (30..41).collect()]);
    }

    /// A tiny model with 3 hidden states gives one group (fixtures/models-tiny, SPEC §5.5).
    #[test]
    fn tiny_model_has_one_group() {
        assert_eq!(hidden_state_groups(3, Some(20), &DEFAULT_FRACTIONS), vec![vec![1, 2]]);
    }
}
