//! When each volume of a run was acquired (BIDS.md §2.5, spec "Timing parameters").
//!
//! The spec allows four descriptions: a constant `RepetitionTime` (optionally sparse with
//! `DelayTime`), or explicit `VolumeTiming` onsets with the acquisition duration given by
//! `SliceTiming` or `FrameAcquisitionDuration` (deprecated: `AcquisitionDuration`). We reject the
//! combinations the spec calls mutually exclusive, because with two sources of truth any choice
//! could silently shift every prediction.
//!
//! The time we assign to a volume is its onset plus a *slice-time reference* inside its
//! acquisition window. Like fMRIPrep's `--slice-time-ref` (default 0.5) the reference is a
//! fraction of the slice acquisition span: with `SliceTiming` it is
//! `min + frac * (max - min)` of the slice times (fMRIPrep `bold/stc.py`); without it, the slices
//! are taken to fill the acquisition time TA, so it is `frac * TA` with TA = TR - DelayTime, or
//! `FrameAcquisitionDuration`. A `StartTime` in the sidecar (written by fMRIPrep into
//! slice-time-corrected derivatives) already states the reference and wins.

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// fMRIPrep's default `--slice-time-ref`: the middle of the slice acquisition span.
pub const DEFAULT_SLICE_TIME_REF: f64 = 0.5;

/// How volume onsets are given.
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeOnsets {
    /// Volume k starts at `k * repetition_time`.
    Regular { repetition_time: f64 },
    /// Volume k starts at `onsets[k]` (`VolumeTiming`, clustered/sparse designs).
    Explicit { onsets: Vec<f64> },
}

/// The timing fields of one run, after sidecar inheritance, checked against the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTiming {
    pub onsets: VolumeOnsets,
    pub repetition_time: Option<f64>,
    pub volume_timing: Option<Vec<f64>>,
    pub slice_timing: Option<Vec<f64>>,
    pub delay_time: Option<f64>,
    /// `FrameAcquisitionDuration`, or the deprecated `AcquisitionDuration` when only it is given.
    pub frame_acquisition_duration: Option<f64>,
    pub start_time: Option<f64>,
}

impl RunTiming {
    /// Reads the timing fields from merged sidecar metadata. `bold` names the run in errors;
    /// `sources` maps each key to the sidecar that set it, so a wrong type names its file.
    pub fn from_metadata(
        meta: &Map<String, Value>,
        bold: &Path,
        sources: &HashMap<String, PathBuf>,
    ) -> Result<RunTiming> {
        let src = |key: &str| {
            sources
                .get(key)
                .cloned()
                .unwrap_or_else(|| bold.to_path_buf())
        };
        let number = |key: &str| -> Result<Option<f64>> {
            match meta.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => match n.as_f64() {
                    Some(v) if v.is_finite() => Ok(Some(v)),
                    _ => Err(json_err(src(key), key, "is not a finite number")),
                },
                Some(other) => Err(json_err(
                    src(key),
                    key,
                    &format!("must be a number of seconds, found {other}"),
                )),
            }
        };
        let list = |key: &str| -> Result<Option<Vec<f64>>> {
            match meta.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                            json_err(
                                src(key),
                                key,
                                &format!("must hold only numbers (seconds), found {v}"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Some),
                Some(other) => Err(json_err(
                    src(key),
                    key,
                    &format!("must be a list of numbers (seconds), found {other}"),
                )),
            }
        };
        let invalid = |reason: String, fix: &str| Error::DatasetInvalid {
            path: bold.to_path_buf(),
            reason,
            fix: fix.to_string(),
        };

        let tr = number("RepetitionTime")?;
        let vt = list("VolumeTiming")?;
        let st = list("SliceTiming")?;
        let delay = number("DelayTime")?;
        let fad = number("FrameAcquisitionDuration")?;
        let ad = number("AcquisitionDuration")?;
        let start_time = number("StartTime")?;
        let frame_acquisition_duration = fad.or(ad);

        let onsets = match (tr, &vt) {
            (None, None) => {
                return Err(Error::MissingTiming {
                    path: bold.to_path_buf(),
                    reason: "neither RepetitionTime nor VolumeTiming is set in any applicable sidecar".into(),
                    fix: "add \"RepetitionTime\": <seconds> to the run's _bold.json (or to a task-<label>_bold.json at the dataset root, which all runs of that task inherit)".into(),
                });
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "both RepetitionTime and VolumeTiming are set; the spec makes them mutually exclusive".into(),
                    "keep RepetitionTime for a constant TR, or VolumeTiming for explicit volume onsets, not both",
                ));
            }
            (Some(tr), None) => {
                if tr <= 0.0 {
                    return Err(json_err(
                        src("RepetitionTime"),
                        "RepetitionTime",
                        &format!("is {tr}; it must be > 0 seconds"),
                    ));
                }
                if frame_acquisition_duration.is_some() {
                    let key = if fad.is_some() {
                        "FrameAcquisitionDuration"
                    } else {
                        "AcquisitionDuration"
                    };
                    return Err(invalid(
                        format!(
                            "{key} is set together with RepetitionTime; the spec makes them mutually exclusive"
                        ),
                        "for a sparse constant-TR design use RepetitionTime with DelayTime (TR minus the acquisition time)",
                    ));
                }
                if let Some(d) = delay
                    && (d < 0.0 || d >= tr)
                {
                    return Err(invalid(
                        format!(
                            "DelayTime {d} s must be >= 0 and shorter than RepetitionTime {tr} s"
                        ),
                        "DelayTime is the silent gap within each TR, in seconds",
                    ));
                }
                VolumeOnsets::Regular {
                    repetition_time: tr,
                }
            }
            (None, Some(v)) => {
                if delay.is_some() {
                    return Err(invalid(
                        "DelayTime is set together with VolumeTiming; the spec makes them mutually exclusive".into(),
                        "with VolumeTiming give the acquisition time as FrameAcquisitionDuration (or SliceTiming) and drop DelayTime",
                    ));
                }
                if v.is_empty() {
                    return Err(json_err(
                        src("VolumeTiming"),
                        "VolumeTiming",
                        "is empty; it needs one onset per volume",
                    ));
                }
                if v.iter().any(|&x| x < 0.0) || v.windows(2).any(|w| w[1] <= w[0]) {
                    return Err(json_err(
                        src("VolumeTiming"),
                        "VolumeTiming",
                        "must be non-negative and strictly increasing (one onset per volume, in seconds)",
                    ));
                }
                if st.is_none() && frame_acquisition_duration.is_none() {
                    return Err(invalid(
                        "VolumeTiming needs the acquisition time, from SliceTiming or FrameAcquisitionDuration, and neither is set".into(),
                        "add \"FrameAcquisitionDuration\": <seconds per volume> (or SliceTiming) to the _bold.json",
                    ));
                }
                VolumeOnsets::Explicit { onsets: v.clone() }
            }
        };
        if let Some(f) = frame_acquisition_duration
            && f <= 0.0
        {
            return Err(invalid(
                format!("the acquisition duration {f} s must be > 0"),
                "give FrameAcquisitionDuration in seconds",
            ));
        }
        if let Some(s) = &st {
            if s.is_empty() || s.iter().any(|&x| x < 0.0) {
                return Err(json_err(
                    src("SliceTiming"),
                    "SliceTiming",
                    "must be a non-empty list of non-negative slice times in seconds",
                ));
            }
            let max = s.iter().cloned().fold(f64::MIN, f64::max);
            let window = match (&onsets, tr) {
                (VolumeOnsets::Regular { .. }, Some(tr)) => Some(tr - delay.unwrap_or(0.0)),
                _ => frame_acquisition_duration.or_else(|| match &onsets {
                    VolumeOnsets::Explicit { onsets } => {
                        onsets.windows(2).map(|w| w[1] - w[0]).reduce(f64::min)
                    }
                    _ => None,
                }),
            };
            if let Some(w) = window
                && max >= w
            {
                return Err(json_err(
                    src("SliceTiming"),
                    "SliceTiming",
                    &format!(
                        "has a slice at {max} s, not within the {w} s acquisition window (are the values in milliseconds?)"
                    ),
                ));
            }
        }
        Ok(RunTiming {
            onsets,
            repetition_time: tr,
            volume_timing: vt,
            slice_timing: st,
            delay_time: delay,
            frame_acquisition_duration,
            start_time,
        })
    }

    /// Acquisition time (TA) of one volume, when it can be known: TR - DelayTime,
    /// `FrameAcquisitionDuration`, or (for VolumeTiming with only SliceTiming) the slice span.
    pub fn acquisition_duration(&self) -> Option<f64> {
        match &self.onsets {
            VolumeOnsets::Regular { repetition_time } => {
                Some(repetition_time - self.delay_time.unwrap_or(0.0))
            }
            VolumeOnsets::Explicit { .. } => self.frame_acquisition_duration,
        }
    }

    /// Seconds from a volume's onset to the time its values stand for. `frac` is the slice-time
    /// reference in [0, 1] ([`DEFAULT_SLICE_TIME_REF`] = middle); see the module docs.
    pub fn slice_time_reference(&self, frac: f64) -> f64 {
        let frac = if frac.is_finite() {
            frac.clamp(0.0, 1.0)
        } else {
            DEFAULT_SLICE_TIME_REF
        };
        if let Some(t) = self.start_time {
            return t;
        }
        if let Some(st) = &self.slice_timing {
            let min = st.iter().cloned().fold(f64::MAX, f64::min);
            let max = st.iter().cloned().fold(f64::MIN, f64::max);
            return min + frac * (max - min);
        }
        frac * self.acquisition_duration().unwrap_or(0.0)
    }

    /// Onset of volume `k` (seconds from the first stored volume), or `None` past the end of
    /// `VolumeTiming`.
    pub fn volume_onset(&self, k: usize) -> Option<f64> {
        match &self.onsets {
            VolumeOnsets::Regular { repetition_time } => Some(k as f64 * repetition_time),
            VolumeOnsets::Explicit { onsets } => onsets.get(k).copied(),
        }
    }

    /// The number of volumes `VolumeTiming` implies, when it is used.
    pub fn n_volumes_hint(&self) -> Option<usize> {
        match &self.onsets {
            VolumeOnsets::Explicit { onsets } => Some(onsets.len()),
            VolumeOnsets::Regular { .. } => None,
        }
    }

    /// The time each of `n_volumes` volumes stands for: onset + slice-time reference. This is the
    /// time the aligner samples the predicted signal at (DESIGN.md §5). `bold` names the run when
    /// `VolumeTiming` is shorter than the volume count.
    pub fn acquisition_times(&self, n_volumes: usize, frac: f64, bold: &Path) -> Result<Vec<f64>> {
        let r = self.slice_time_reference(frac);
        if let VolumeOnsets::Explicit { onsets } = &self.onsets
            && onsets.len() != n_volumes
        {
            return Err(Error::DatasetInvalid {
                path: bold.to_path_buf(),
                reason: format!(
                    "VolumeTiming lists {} onsets but the image has {n_volumes} volumes",
                    onsets.len()
                ),
                fix: "VolumeTiming needs exactly one onset per volume".into(),
            });
        }
        Ok((0..n_volumes)
            .map(|k| self.volume_onset(k).unwrap_or(0.0) + r)
            .collect())
    }
}

fn json_err(path: PathBuf, key: &str, what: &str) -> Error {
    Error::Json {
        path,
        message: format!("'{key}' {what}"),
        fix: format!("correct \"{key}\" in this sidecar (BIDS timing fields are in seconds)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn timing(v: Value) -> Result<RunTiming> {
        RunTiming::from_metadata(
            v.as_object().unwrap(),
            Path::new("sub-01_task-a_bold.nii"),
            &HashMap::new(),
        )
    }

    #[test]
    fn conflicts_and_missing() {
        assert!(matches!(
            timing(json!({})),
            Err(Error::MissingTiming { .. })
        ));
        assert!(matches!(
            timing(json!({"RepetitionTime": 2, "VolumeTiming": [0, 1]})),
            Err(Error::DatasetInvalid { .. })
        ));
        assert!(matches!(
            timing(json!({"VolumeTiming": [0, 1], "DelayTime": 1, "FrameAcquisitionDuration": 1})),
            Err(Error::DatasetInvalid { .. })
        ));
        assert!(matches!(
            timing(json!({"VolumeTiming": [0, 1]})),
            Err(Error::DatasetInvalid { .. })
        ));
        assert!(matches!(
            timing(json!({"RepetitionTime": 2, "FrameAcquisitionDuration": 1})),
            Err(Error::DatasetInvalid { .. })
        ));
        assert!(matches!(
            timing(json!({"RepetitionTime": "2"})),
            Err(Error::Json { .. })
        ));
        assert!(matches!(
            timing(json!({"RepetitionTime": 0})),
            Err(Error::Json { .. })
        ));
        assert!(matches!(
            timing(json!({"RepetitionTime": 2, "SliceTiming": [0, 1000]})),
            Err(Error::Json { .. })
        ));
        assert!(matches!(
            timing(json!({"VolumeTiming": [0, 2, 1], "FrameAcquisitionDuration": 1})),
            Err(Error::Json { .. })
        ));
    }

    #[test]
    fn start_time_wins() {
        let t =
            timing(json!({"RepetitionTime": 2, "SliceTiming": [0, 1], "StartTime": 0.3})).unwrap();
        assert_eq!(t.slice_time_reference(0.5), 0.3);
        let t = timing(json!({"RepetitionTime": 2, "SliceTiming": [0.2, 1.0]})).unwrap();
        assert!((t.slice_time_reference(0.0) - 0.2).abs() < 1e-12);
        assert!((t.slice_time_reference(1.0) - 1.0).abs() < 1e-12);
    }
}
