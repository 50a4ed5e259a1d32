//! Placing per-word vectors on the 2 Hz feature grid (SPEC §5.1).
//!
//! A word is a static item: its whole vector is added to every bin its time span touches,
//! and overlapping words are summed. The bin arithmetic is neuralset's `TimedArray`
//! `_overlap_slice`, with Python's round-half-to-even on `2 * seconds` computed in f64; a
//! different rounding moves words ending on a .25 s boundary into the neighbouring bin.

use std::ops::Range;

use crate::util::round_half_even;

/// The reference's feature rate (`data.frequency`).
pub const FEATURE_HZ: f64 = 2.0;

/// Number of bins of a segment of `duration` seconds: `max(1, round(f * duration))`
/// (0 for a zero-length segment, as `TimedArray` gives no time axis then).
pub fn n_bins(duration: f64, freq: f64) -> usize {
    if duration == 0.0 {
        0
    } else {
        round_half_even(freq * duration).max(1) as usize
    }
}

/// The bins of a segment `[start, start + duration)` (with `n_bins(duration)` bins) that a
/// word `[onset, onset + word_duration)` is added to, or `None` when it does not overlap.
///
/// Follows `TimedArray._overlap_slice`: a word that only touches the segment's edge is out,
/// unless it has zero duration (a zero-length word at `t` is an instant and lands in the bin
/// that `t` rounds to); the span is at least one bin; a span running past the end is moved
/// left so that it ends on the last bin.
pub fn word_bins(
    onset: f64,
    word_duration: f64,
    start: f64,
    duration: f64,
    freq: f64,
) -> Option<Range<usize>> {
    let n = n_bins(duration, freq) as i64;
    let ov_start = onset.max(start);
    let ov_stop = (onset + word_duration).min(start + duration);
    if ov_stop < ov_start {
        return None;
    }
    if ov_stop == ov_start && duration != 0.0 && word_duration != 0.0 {
        return None;
    }
    if n == 0 {
        return None;
    }
    let mut first = round_half_even(freq * (ov_start - start));
    let len = round_half_even(freq * (ov_stop - ov_start)).max(1);
    if first > n - len {
        first = n - len;
    }
    if first < 0 {
        return None;
    }
    Some(first as usize..(first + len) as usize)
}

/// Sum per-word vectors onto the grid. `vectors[i]` has `dim` values (for text: L * D, layer
/// major); the result is `(dim, n_bins)` row-major, i.e. already the (L, D, T) layout.
pub fn bin_words(
    spans: &[(f64, f64)],
    vectors: &[Vec<f32>],
    dim: usize,
    start: f64,
    duration: f64,
    freq: f64,
) -> (Vec<f32>, usize) {
    let n = n_bins(duration, freq);
    let mut out = vec![0f32; dim * n];
    for (&(onset, d), v) in spans.iter().zip(vectors) {
        let Some(bins) = word_bins(onset, d, start, duration, freq) else {
            continue;
        };
        for (j, &x) in v.iter().enumerate().take(dim) {
            let row = &mut out[j * n..(j + 1) * n];
            for b in bins.clone() {
                row[b] += x;
            }
        }
    }
    (out, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bins(onset: f64, d: f64) -> Option<Range<usize>> {
        word_bins(onset, d, 10.0, 100.0, FEATURE_HZ)
    }

    /// The verified examples of SPEC §5.1 (segment start S = 10 s, 100 s long).
    #[test]
    fn spec_examples() {
        assert_eq!(bins(10.24, 0.12), Some(0..1), "short word inside bin 0");
        assert_eq!(
            bins(10.25, 0.30),
            Some(0..1),
            "2*0.25 = 0.5 rounds half to even: bin 0"
        );
        assert_eq!(
            bins(10.75, 0.80),
            Some(2..4),
            "1.5 -> 2, length 1.6 -> 2 bins"
        );
        assert_eq!(
            bins(9.90, 0.30),
            Some(0..1),
            "starts before the segment: clipped to bin 0"
        );
        assert_eq!(
            bins(109.8, 0.5),
            Some(199..200),
            "runs past the end: last bin"
        );
        assert_eq!(bins(12.0, 0.0), Some(4..5), "zero-duration word at 12 s");
    }

    #[test]
    fn edges() {
        assert_eq!(bins(9.5, 0.5), None, "ends exactly at the segment start");
        assert_eq!(bins(110.0, 0.3), None, "starts exactly at the segment end");
        assert_eq!(bins(200.0, 1.0), None, "far after");
        assert_eq!(
            bins(10.0, 0.0),
            Some(0..1),
            "zero-duration word on the start edge is kept"
        );
        assert_eq!(
            bins(110.0, 0.0),
            Some(199..200),
            "zero-duration word on the end edge: clamped into the last bin"
        );
        assert_eq!(
            bins(11.25, 0.5),
            Some(2..3),
            "2.5 rounds to 2 (half to even), length 1"
        );
        assert_eq!(bins(11.75, 0.5), Some(4..5), "3.5 rounds to 4");
        assert_eq!(bins(10.0, 0.2), Some(0..1), "shorter than a bin: one bin");
        assert_eq!(bins(5.0, 300.0), Some(0..200), "covers the whole segment");
    }

    #[test]
    fn overlapping_words_are_summed_and_empty_bins_stay_zero() {
        let (out, n) = bin_words(
            &[(0.0, 0.4), (0.1, 0.3), (2.0, 0.5)],
            &[vec![1.0, 10.0], vec![2.0, 20.0], vec![4.0, 40.0]],
            2,
            0.0,
            3.0,
            2.0,
        );
        assert_eq!(n, 6);
        assert_eq!(
            out,
            vec![3.0, 0.0, 0.0, 0.0, 4.0, 0.0, 30.0, 0.0, 0.0, 0.0, 40.0, 0.0]
        );
    }

    #[test]
    fn bin_count() {
        assert_eq!(n_bins(100.0, 2.0), 200);
        assert_eq!(n_bins(7.5, 2.0), 15);
        assert_eq!(n_bins(0.2, 2.0), 1);
        assert_eq!(n_bins(0.75, 2.0), 2);
        assert_eq!(n_bins(1.25, 2.0), 2);
    }
}
