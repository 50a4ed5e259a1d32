//! Cutting long media into independent chunks (SPEC §5.0, neuralset `ChunkEvents`).
//!
//! Audio and video longer than a minute are processed in chunks, each with its own
//! normalization and attention context, so where the cuts fall changes the features. The rule:
//! candidate cuts every `max_s` seconds from the start; a cut is kept iff both neighbouring
//! pieces (computed on the unfiltered candidate list) are at least `min_s` long.

/// One chunk, in seconds relative to the start of the media event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chunk {
    pub offset: f64,
    pub duration: f64,
}

/// The reference's chunk settings for audio and video.
pub const MAX_CHUNK_S: f64 = 60.0;
pub const MIN_CHUNK_S: f64 = 30.0;

/// Split `[0, duration)` into chunks.
pub fn chunk(duration: f64, max_s: f64, min_s: f64) -> Vec<Chunk> {
    if duration.is_nan() || duration <= 0.0 {
        return vec![Chunk {
            offset: 0.0,
            duration: duration.max(0.0),
        }];
    }
    // Candidate boundaries 0, max, 2max, ... < duration, then the end.
    let mut bounds = vec![0.0];
    let mut c = max_s;
    while c < duration {
        bounds.push(c);
        c += max_s;
    }
    bounds.push(duration);
    // Keep an interior cut iff both neighbouring candidate pieces are >= min_s.
    let mut kept = vec![0.0];
    for i in 1..bounds.len() - 1 {
        let left = bounds[i] - bounds[i - 1];
        let right = bounds[i + 1] - bounds[i];
        if left >= min_s && right >= min_s {
            kept.push(bounds[i]);
        }
    }
    kept.push(duration);
    kept.windows(2)
        .map(|w| Chunk {
            offset: w[0],
            duration: w[1] - w[0],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cuts(d: f64) -> Vec<(f64, f64)> {
        chunk(d, MAX_CHUNK_S, MIN_CHUNK_S)
            .iter()
            .map(|c| (c.offset, c.offset + c.duration))
            .collect()
    }

    /// The examples listed in SPEC §5.0.
    #[test]
    fn spec_examples() {
        assert_eq!(cuts(80.0), vec![(0.0, 80.0)]);
        assert_eq!(cuts(100.0), vec![(0.0, 60.0), (60.0, 100.0)]);
        assert_eq!(cuts(130.0), vec![(0.0, 60.0), (60.0, 130.0)]);
        assert_eq!(
            cuts(150.0),
            vec![(0.0, 60.0), (60.0, 120.0), (120.0, 150.0)]
        );
    }

    #[test]
    fn short_media_is_one_chunk() {
        assert_eq!(cuts(12.5), vec![(0.0, 12.5)]);
        assert_eq!(cuts(60.0), vec![(0.0, 60.0)]);
    }
}
