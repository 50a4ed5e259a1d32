//! What a participant saw and heard during one run, and when (DESIGN.md §4).
//!
//! A run's events say which media were presented; the extractors need three streams on the run's
//! clock: what was on screen (video frames, still images, blank between them), what was heard
//! (audio of videos and sound files, silence between them), and which words (event rows with a
//! `word`, transcript TSVs named by `stim_file`, or a `<media>_words.tsv` beside a media file).
//! Building the streams here, once, keeps the extractors ignorant of BIDS.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One events.tsv row, reduced to what the timeline needs (the BIDS reader gives more).
#[derive(Debug, Clone, PartialEq)]
pub struct StimEvent {
    pub onset: f64,
    /// `None` for `n/a`: the media's own length is used.
    pub duration: Option<f64>,
    pub trial_type: Option<String>,
    /// Resolved against BIDS_DIR/stimuli (path safety already checked by the reader).
    pub stim_file: Option<PathBuf>,
    pub word: Option<String>,
    /// Where the row came from, for error messages.
    pub source: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Video,
    Audio,
    Image,
    Transcript,
}

/// The kind of a stimulus file, from its extension.
pub fn media_kind(path: &Path) -> Option<MediaKind> {
    let ext = path.extension()?.to_string_lossy().to_ascii_lowercase();
    Some(match ext.as_str() {
        "mp4" | "mkv" | "avi" | "mov" | "webm" | "m4v" | "mpg" | "mpeg" | "ogv" | "flv" => {
            MediaKind::Video
        }
        "wav" | "flac" | "mp3" | "ogg" | "opus" | "m4a" | "aac" | "aif" | "aiff" | "wma" => {
            MediaKind::Audio
        }
        "png" | "jpg" | "jpeg" | "bmp" | "gif" | "tif" | "tiff" | "webp" => MediaKind::Image,
        "tsv" => MediaKind::Transcript,
        _ => return None,
    })
}

/// Something on screen from `onset` for `duration` seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct VisualSegment {
    pub onset: f64,
    pub duration: f64,
    pub path: PathBuf,
    /// Still image (shown as repeated frames) or a video read from its start.
    pub still: bool,
    pub source: PathBuf,
    pub line: usize,
}

/// Something heard from `onset` for `duration` seconds (a sound file or a video's audio track).
#[derive(Debug, Clone, PartialEq)]
pub struct AudioSegment {
    pub onset: f64,
    pub duration: f64,
    pub path: PathBuf,
    pub source: PathBuf,
    pub line: usize,
}

/// A word on the run's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedWord {
    pub onset: f64,
    pub duration: f64,
    pub text: String,
}

/// The three streams of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    pub visual: Vec<VisualSegment>,
    pub audio: Vec<AudioSegment>,
    pub words: Vec<TimedWord>,
    /// Files whose words were used (transcripts), for provenance and the cache key.
    pub transcripts: Vec<PathBuf>,
}

/// Media facts the timeline needs, answered by the decoders (kept abstract so the timeline is
/// testable without FFmpeg).
pub trait MediaProbe {
    /// Duration in seconds of a video or audio file.
    fn duration(&self, path: &Path) -> Result<f64>;
    /// Whether a video file has an audio track.
    fn has_audio(&self, path: &Path) -> Result<bool>;
}

impl Timeline {
    /// The end of the last event of any stream (s from the run's time zero).
    pub fn end(&self) -> f64 {
        let v = self.visual.iter().map(|s| s.onset + s.duration);
        let a = self.audio.iter().map(|s| s.onset + s.duration);
        let w = self.words.iter().map(|s| s.onset + s.duration);
        v.chain(a).chain(w).fold(0.0, f64::max)
    }

    /// The earliest event start (the reference's segmentation starts there).
    pub fn start(&self) -> f64 {
        let v = self.visual.iter().map(|s| s.onset);
        let a = self.audio.iter().map(|s| s.onset);
        let w = self.words.iter().map(|s| s.onset);
        v.chain(a).chain(w).fold(f64::INFINITY, f64::min)
    }

    pub fn is_empty(&self) -> bool {
        self.visual.is_empty() && self.audio.is_empty() && self.words.is_empty()
    }

    /// Build the streams from a run's events.
    pub fn from_events(events: &[StimEvent], probe: &dyn MediaProbe) -> Result<Timeline> {
        let mut t = Timeline::default();
        for ev in events {
            if let Some(w) = ev.word.as_deref().map(str::trim).filter(|w| !w.is_empty()) {
                t.words.push(TimedWord {
                    onset: ev.onset,
                    duration: ev.duration.unwrap_or(0.0).max(0.0),
                    text: w.to_string(),
                });
            }
            let Some(path) = &ev.stim_file else { continue };
            let Some(kind) = media_kind(path) else {
                return Err(Error::Tsv {
                    path: ev.source.clone(),
                    line: ev.line,
                    column: Some("stim_file".into()),
                    message: format!("'{}' is not a stimulus type tribe-bids reads", path.display()),
                    fix: "use a video (mp4, mkv, avi, mov, webm), audio (wav, flac, mp3, ogg, m4a), image (png, jpg, bmp) or a words .tsv".into(),
                });
            };
            if !path.is_file() {
                return Err(Error::InputMissing {
                    path: path.clone(),
                    what: format!(
                        "the stimulus named at {}:{} (stim_file)",
                        ev.source.display(),
                        ev.line
                    ),
                    fix: "put the file under BIDS_DIR/stimuli or correct the stim_file column"
                        .into(),
                });
            }
            let duration = |probe: &dyn MediaProbe| -> Result<f64> {
                match ev.duration {
                    Some(d) if d > 0.0 => Ok(d),
                    _ => probe.duration(path),
                }
            };
            match kind {
                MediaKind::Video => {
                    let d = duration(probe)?;
                    t.visual.push(VisualSegment {
                        onset: ev.onset,
                        duration: d,
                        path: path.clone(),
                        still: false,
                        source: ev.source.clone(),
                        line: ev.line,
                    });
                    if probe.has_audio(path)? {
                        t.audio.push(AudioSegment {
                            onset: ev.onset,
                            duration: d,
                            path: path.clone(),
                            source: ev.source.clone(),
                            line: ev.line,
                        });
                    }
                    t.add_sidecar_transcript(path, ev.onset, d)?;
                }
                MediaKind::Audio => {
                    let d = duration(probe)?;
                    t.audio.push(AudioSegment {
                        onset: ev.onset,
                        duration: d,
                        path: path.clone(),
                        source: ev.source.clone(),
                        line: ev.line,
                    });
                    t.add_sidecar_transcript(path, ev.onset, d)?;
                }
                MediaKind::Image => {
                    let d = ev.duration.filter(|d| *d > 0.0).ok_or_else(|| Error::Tsv {
                        path: ev.source.clone(),
                        line: ev.line,
                        column: Some("duration".into()),
                        message: format!(
                            "image '{}' needs a positive duration (how long it was shown)",
                            path.display()
                        ),
                        fix: "give the display time in seconds in the duration column".into(),
                    })?;
                    t.visual.push(VisualSegment {
                        onset: ev.onset,
                        duration: d,
                        path: path.clone(),
                        still: true,
                        source: ev.source.clone(),
                        line: ev.line,
                    });
                }
                MediaKind::Transcript => {
                    let end = ev.duration.map(|d| ev.onset + d).unwrap_or(f64::INFINITY);
                    t.add_transcript(path, ev.onset, end)?;
                }
            }
        }
        t.visual.sort_by(|a, b| a.onset.total_cmp(&b.onset));
        t.audio.sort_by(|a, b| a.onset.total_cmp(&b.onset));
        // Standardized order of the reference (start asc, duration desc), stable for equal keys.
        t.words.sort_by(|a, b| {
            a.onset
                .total_cmp(&b.onset)
                .then(b.duration.total_cmp(&a.duration))
        });
        check_no_overlap(
            t.visual
                .iter()
                .map(|s| (s.onset, s.duration, &s.source, s.line)),
            "on screen",
        )?;
        check_no_overlap(
            t.audio
                .iter()
                .map(|s| (s.onset, s.duration, &s.source, s.line)),
            "heard",
        )?;
        Ok(t)
    }

    /// `<media stem>_words.tsv` beside a media file, used automatically (DESIGN.md §4).
    fn add_sidecar_transcript(&mut self, media: &Path, onset: f64, duration: f64) -> Result<()> {
        let Some(stem) = media.file_stem() else {
            return Ok(());
        };
        let tsv = media.with_file_name(format!("{}_words.tsv", stem.to_string_lossy()));
        if tsv.is_file() {
            self.add_transcript(&tsv, onset, onset + duration)?;
        }
        Ok(())
    }

    /// Words of a transcript TSV (`onset duration word`, relative to the media start), shifted to
    /// the event's onset and clipped to the event's end.
    fn add_transcript(&mut self, tsv: &Path, onset: f64, end: f64) -> Result<()> {
        let words = crate::stimulus::words::read_words_tsv(tsv)?;
        for w in words {
            let start = onset + w.onset;
            if start >= end {
                continue;
            }
            self.words.push(TimedWord {
                onset: start,
                duration: w.duration,
                text: w.text,
            });
        }
        self.transcripts.push(tsv.to_path_buf());
        Ok(())
    }
}

/// Two media on the same stream at once cannot be rendered to one screen or one sound track.
fn check_no_overlap<'a>(
    segs: impl Iterator<Item = (f64, f64, &'a PathBuf, usize)>,
    what: &str,
) -> Result<()> {
    let segs: Vec<_> = segs.collect();
    for w in segs.windows(2) {
        let (a_on, a_d, a_src, a_line) = w[0];
        let (b_on, _, b_src, b_line) = w[1];
        // A tolerance of 1 ms absorbs rounding in hand-written onsets.
        if b_on < a_on + a_d - 1e-3 {
            return Err(Error::Tsv {
                path: b_src.clone(),
                line: b_line,
                column: Some("onset".into()),
                message: format!(
                    "two stimuli {what} at once: this event starts at {b_on} s, before the event at {}:{a_line} ends ({} s)",
                    a_src.display(),
                    a_on + a_d
                ),
                fix:
                    "fix the onsets/durations so media do not overlap (one screen, one sound track)"
                        .into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeProbe;
    impl MediaProbe for FakeProbe {
        fn duration(&self, _: &Path) -> Result<f64> {
            Ok(10.0)
        }
        fn has_audio(&self, p: &Path) -> Result<bool> {
            Ok(!p.to_string_lossy().contains("silent"))
        }
    }

    fn ev(
        dir: &Path,
        onset: f64,
        dur: Option<f64>,
        stim: Option<&str>,
        word: Option<&str>,
        line: usize,
    ) -> StimEvent {
        StimEvent {
            onset,
            duration: dur,
            trial_type: None,
            stim_file: stim.map(|s| dir.join(s)),
            word: word.map(String::from),
            source: dir.join("events.tsv"),
            line,
        }
    }

    #[test]
    fn streams_from_events() {
        let d = tempfile::tempdir().unwrap();
        for f in ["movie.mp4", "silent.mp4", "face.png", "tone.wav"] {
            std::fs::write(d.path().join(f), b"x").unwrap();
        }
        std::fs::write(
            d.path().join("movie_words.tsv"),
            "onset\tduration\tword\n1.0\t0.5\thello\n12.0\t0.5\tlate\n",
        )
        .unwrap();
        let events = vec![
            ev(d.path(), 0.0, None, Some("movie.mp4"), None, 2),
            ev(d.path(), 10.0, Some(2.0), Some("face.png"), None, 3),
            ev(d.path(), 12.0, Some(3.0), Some("silent.mp4"), None, 4),
            ev(d.path(), 20.0, None, Some("tone.wav"), None, 5),
            ev(d.path(), 21.0, Some(0.3), None, Some("word"), 6),
        ];
        let t = Timeline::from_events(&events, &FakeProbe).unwrap();
        assert_eq!(t.visual.len(), 3);
        assert!(t.visual[1].still);
        assert_eq!(
            t.audio.len(),
            2,
            "movie audio + tone; the silent video has no track"
        );
        assert_eq!(
            t.words.iter().map(|w| w.text.as_str()).collect::<Vec<_>>(),
            vec!["hello", "word"],
            "transcript clipped to the event"
        );
        assert_eq!(t.words[0].onset, 1.0);
        assert_eq!(t.end(), 30.0);
    }

    #[test]
    fn overlapping_media_name_both_events() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.mp4"), b"x").unwrap();
        std::fs::write(d.path().join("b.mp4"), b"x").unwrap();
        let events = vec![
            ev(d.path(), 0.0, Some(10.0), Some("a.mp4"), None, 2),
            ev(d.path(), 5.0, Some(10.0), Some("b.mp4"), None, 3),
        ];
        let e = Timeline::from_events(&events, &FakeProbe).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(":3") && msg.contains(":2"), "{msg}");
        assert_eq!(e.exit_code(), crate::error::exit::DATA_ERROR);
    }

    #[test]
    fn missing_stimulus_and_image_without_duration() {
        let d = tempfile::tempdir().unwrap();
        let e = Timeline::from_events(
            &[ev(d.path(), 0.0, Some(1.0), Some("nope.mp4"), None, 2)],
            &FakeProbe,
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::INPUT_MISSING);
        std::fs::write(d.path().join("i.png"), b"x").unwrap();
        let e = Timeline::from_events(
            &[ev(d.path(), 0.0, None, Some("i.png"), None, 2)],
            &FakeProbe,
        )
        .unwrap_err();
        assert!(e.to_string().contains("duration"));
    }
}
