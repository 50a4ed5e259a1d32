//! In-silico probe stimuli, made in code, and the probe contrasts that name ICA components
//! (SPEC §11, issue 8).
//!
//! The paper names its five networks by what drives them. We do the same with a small virtual
//! localizer: seven short conditions that differ from a common baseline (silence, a blank grey
//! screen, no words) in one stream only, so a contrast between two conditions isolates one
//! kind of input:
//!
//! | condition | audio | screen | words |
//! |---|---|---|---|
//! | `baseline` | silence | blank | none |
//! | `tones` | pure-tone pips | blank | none |
//! | `speech` | a real speech recording | blank | none |
//! | `words` | silence | blank | a generated transcript |
//! | `movingGratings` | silence | drifting sine gratings (a real video file) | none |
//! | `staticGratings` | silence | the same gratings, still | none |
//! | `images` | silence | synthetic still images | none |
//!
//! Every stream is *present* in every condition (silence is a silent sound file, blank is a
//! grey image, "no words" is an all-zero text feature array), because the model treats an absent
//! modality (zeros after projection) differently from a present but empty one (the projector
//! bias, SPEC §1.2); mixing the two would make every contrast mostly a bias difference.
//!
//! The speech condition needs speech: nothing synthesised in a few lines sounds like speech to
//! Wav2Vec-BERT, so it uses a real recording (the caller finds one, e.g. a stimulus of the
//! dataset that has a word transcript) and is left out, and said so, when there is none.
//! The images are synthetic (shapes and gradients), not photographs: they probe "something on
//! screen" against a blank screen, which is what a visual localizer contrasts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::analysis::networks::{Network, Probe};
use crate::error::{Error, MediaErrorKind, Result};
use crate::stimulus::timeline::{AudioSegment, TimedWord, Timeline, VisualSegment};

/// Length of every probe condition, in seconds (prediction rows 0..10 are averaged).
pub const PROBE_SECONDS: usize = 10;
/// Sample rate of the generated sounds (Wav2Vec-BERT's rate, so no resampling happens).
pub const AUDIO_RATE: u32 = 16_000;
/// Frame rate of the grating video (V-JEPA2 samples clips at 16 fps).
pub const VIDEO_FPS: u32 = 16;
/// Width and height of the generated frames and images (the processor resizes them anyway).
pub const FRAME_SIZE: usize = 160;
/// Orientations of the gratings, one per quarter of the condition, so motion has 4 directions.
const GRATING_ORIENTATIONS_DEG: [f64; 4] = [0.0, 45.0, 90.0, 135.0];
/// Grating spatial frequency (cycles per frame width) and drift (cycles per second).
const GRATING_CYCLES: f64 = 6.0;
const GRATING_DRIFT_HZ: f64 = 2.0;
/// Tone pips: frequencies cycled through, pip and gap lengths, ramp length (s).
const TONE_FREQS_HZ: [f64; 5] = [250.0, 500.0, 1000.0, 2000.0, 4000.0];
const TONE_PIP_S: f64 = 0.4;
const TONE_GAP_S: f64 = 0.1;
const TONE_RAMP_S: f64 = 0.01;
/// Number of still images shown in the `images` condition.
const N_IMAGES: usize = 5;
/// Word rate of the generated transcript.
const WORD_STEP_S: f64 = 0.3;
const WORD_DURATION_S: f64 = 0.25;
/// Plain sentences for the `words` condition (a language localizer reads sentences).
const SENTENCES: [&str; 5] = [
    "The little boy opened the door and walked slowly into the garden.",
    "She read the letter twice before she put it back in the drawer.",
    "A dog was barking somewhere down the quiet street that night.",
    "We will meet again at the old house by the river next summer.",
    "Nobody knew why the train had stopped in the middle of the field.",
];

/// What a condition plays on each stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAudio {
    Silence,
    Tones,
    Speech,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeScreen {
    Blank,
    MovingGratings,
    StaticGratings,
    Images,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeText {
    NoWords,
    Words,
}

/// One probe condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition {
    pub name: &'static str,
    pub audio: ProbeAudio,
    pub screen: ProbeScreen,
    pub text: ProbeText,
}

/// The seven conditions (see the module docs).
pub fn conditions() -> Vec<Condition> {
    use ProbeAudio as A;
    use ProbeScreen as S;
    use ProbeText as T;
    let c = |name, audio, screen, text| Condition {
        name,
        audio,
        screen,
        text,
    };
    vec![
        c("baseline", A::Silence, S::Blank, T::NoWords),
        c("tones", A::Tones, S::Blank, T::NoWords),
        c("speech", A::Speech, S::Blank, T::NoWords),
        c("words", A::Silence, S::Blank, T::Words),
        c("movingGratings", A::Silence, S::MovingGratings, T::NoWords),
        c("staticGratings", A::Silence, S::StaticGratings, T::NoWords),
        c("images", A::Silence, S::Images, T::NoWords),
    ]
}

/// A probe contrast: mean response to `plus` minus the mean of the responses to `minus`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContrastDef {
    pub name: &'static str,
    pub plus: Vec<&'static str>,
    pub minus: Vec<&'static str>,
    /// The network this contrast localizes.
    pub network: Network,
    pub rationale: &'static str,
}

/// The probe contrasts. The default-mode one is reversed (baseline minus every task
/// condition): the default-mode network is the one that tasks deactivate.
pub fn contrast_defs() -> Vec<ContrastDef> {
    vec![
        ContrastDef {
            name: "tonesVsSilence",
            plus: vec!["tones"],
            minus: vec!["baseline"],
            network: Network::PrimaryAuditory,
            rationale: "pure tones against silence: primary auditory cortex",
        },
        ContrastDef {
            name: "speechVsSilence",
            plus: vec!["speech"],
            minus: vec!["baseline"],
            network: Network::PrimaryAuditory,
            rationale: "speech sound against silence: auditory cortex (speech drives it too)",
        },
        ContrastDef {
            name: "speechVsTones",
            plus: vec!["speech"],
            minus: vec!["tones"],
            network: Network::Language,
            rationale: "speech against tones: what speech adds beyond sound (temporal language areas)",
        },
        ContrastDef {
            name: "wordsVsNoWords",
            plus: vec!["words"],
            minus: vec!["baseline"],
            network: Network::Language,
            rationale: "a sentence transcript against no words: the language network",
        },
        ContrastDef {
            name: "movingVsStaticGratings",
            plus: vec!["movingGratings"],
            minus: vec!["staticGratings"],
            network: Network::Motion,
            rationale: "drifting against still gratings: motion-selective MT+ (the classic localizer)",
        },
        ContrastDef {
            name: "imagesVsBlank",
            plus: vec!["images"],
            minus: vec!["baseline"],
            network: Network::Visual,
            rationale: "still images against a blank screen: visual cortex",
        },
        ContrastDef {
            name: "staticGratingsVsBlank",
            plus: vec!["staticGratings"],
            minus: vec!["baseline"],
            network: Network::Visual,
            rationale: "still gratings against a blank screen: early visual cortex",
        },
        ContrastDef {
            name: "baselineVsAllProbes",
            plus: vec!["baseline"],
            minus: vec![
                "tones",
                "speech",
                "words",
                "movingGratings",
                "staticGratings",
                "images",
            ],
            network: Network::DefaultMode,
            rationale: "baseline against every task condition: what tasks deactivate (default mode)",
        },
    ]
}

/// The generated stimulus files of one probe set.
#[derive(Debug, Clone)]
pub struct ProbeStimuli {
    pub dir: PathBuf,
    pub silence: PathBuf,
    pub tones: PathBuf,
    /// The speech recording and how much of it is played (at most [`PROBE_SECONDS`]).
    pub speech: Option<(PathBuf, f64)>,
    pub blank: PathBuf,
    pub moving_gratings: PathBuf,
    pub static_gratings: Vec<PathBuf>,
    pub images: Vec<PathBuf>,
    pub words: Vec<TimedWord>,
}

/// Write every generated stimulus into `dir` (created if needed). `speech` is a recording to
/// use for the speech condition, with its duration in seconds (see [`find_speech_recording`]).
/// The files are byte-identical from run to run, so the feature cache recognises them.
pub fn write_probe_stimuli(dir: &Path, speech: Option<(PathBuf, f64)>) -> Result<ProbeStimuli> {
    std::fs::create_dir_all(dir).map_err(|source| Error::OutputNotWritable {
        path: dir.to_path_buf(),
        source,
    })?;
    let n = PROBE_SECONDS * AUDIO_RATE as usize;
    let silence = dir.join("probe-silence.wav");
    write_wav_pcm16(&silence, &vec![0.0; n], AUDIO_RATE)?;
    let tones = dir.join("probe-tones.wav");
    write_wav_pcm16(&tones, &tone_pips(n, AUDIO_RATE), AUDIO_RATE)?;

    let blank = dir.join("probe-blank.png");
    write_png(
        &blank,
        FRAME_SIZE,
        FRAME_SIZE,
        &vec![128u8; FRAME_SIZE * FRAME_SIZE * 3],
    )?;
    let mut static_gratings = Vec::new();
    for (i, &deg) in GRATING_ORIENTATIONS_DEG.iter().enumerate() {
        let p = dir.join(format!("probe-grating-{i}.png"));
        let mut rgb = vec![0u8; FRAME_SIZE * FRAME_SIZE * 3];
        for (px, v) in rgb.chunks_exact_mut(3).zip(grating_frame(deg, 0.0)) {
            px.fill(v);
        }
        write_png(&p, FRAME_SIZE, FRAME_SIZE, &rgb)?;
        static_gratings.push(p);
    }
    let moving_gratings = dir.join("probe-moving-gratings.mkv");
    let n_frames = PROBE_SECONDS * VIDEO_FPS as usize;
    let segment = n_frames / GRATING_ORIENTATIONS_DEG.len();
    encode_gray_video(
        &moving_gratings,
        FRAME_SIZE,
        FRAME_SIZE,
        VIDEO_FPS,
        n_frames,
        |i| {
            let deg =
                GRATING_ORIENTATIONS_DEG[(i / segment).min(GRATING_ORIENTATIONS_DEG.len() - 1)];
            grating_frame(deg, i as f64 / VIDEO_FPS as f64)
        },
    )?;
    let mut images = Vec::new();
    for i in 0..N_IMAGES {
        let p = dir.join(format!("probe-image-{i}.png"));
        write_png(&p, FRAME_SIZE, FRAME_SIZE, &synthetic_image(i as u64))?;
        images.push(p);
    }
    Ok(ProbeStimuli {
        dir: dir.to_path_buf(),
        silence,
        tones,
        speech: speech.map(|(p, d)| (p, d.min(PROBE_SECONDS as f64))),
        blank,
        moving_gratings,
        static_gratings,
        images,
        words: transcript(),
    })
}

/// The three streams of one condition. The `NoWords` text stream has no words here: the caller
/// feeds an all-zero text feature array so that the text modality stays present.
/// Returns `None` for the speech condition when there is no speech recording.
pub fn condition_timeline(c: &Condition, s: &ProbeStimuli) -> Option<Timeline> {
    let d = PROBE_SECONDS as f64;
    let src = s.dir.join("probes");
    let audio = |path: &Path, duration: f64| AudioSegment {
        onset: 0.0,
        duration,
        path: path.to_path_buf(),
        source: src.clone(),
        line: 0,
    };
    let still = |path: &Path, onset: f64, duration: f64| VisualSegment {
        onset,
        duration,
        path: path.to_path_buf(),
        still: true,
        source: src.clone(),
        line: 0,
    };
    let mut t = Timeline {
        audio: vec![match c.audio {
            ProbeAudio::Silence => audio(&s.silence, d),
            ProbeAudio::Tones => audio(&s.tones, d),
            ProbeAudio::Speech => {
                let (p, dur) = s.speech.as_ref()?;
                audio(p, *dur)
            }
        }],
        ..Default::default()
    };
    t.visual = match c.screen {
        ProbeScreen::Blank => vec![still(&s.blank, 0.0, d)],
        ProbeScreen::MovingGratings => vec![VisualSegment {
            onset: 0.0,
            duration: d,
            path: s.moving_gratings.clone(),
            still: false,
            source: src.clone(),
            line: 0,
        }],
        ProbeScreen::StaticGratings => split_evenly(&s.static_gratings, d)
            .map(|(p, on, du)| still(p, on, du))
            .collect(),
        ProbeScreen::Images => split_evenly(&s.images, d)
            .map(|(p, on, du)| still(p, on, du))
            .collect(),
    };
    if c.text == ProbeText::Words {
        t.words = s.words.clone();
    }
    Some(t)
}

fn split_evenly(paths: &[PathBuf], total: f64) -> impl Iterator<Item = (&PathBuf, f64, f64)> {
    let step = total / paths.len().max(1) as f64;
    paths
        .iter()
        .enumerate()
        .map(move |(i, p)| (p, i as f64 * step, step))
}

/// Contrast maps from condition responses (one map per condition, same length). Contrasts that
/// need a condition that was not run (e.g. speech without a recording) are left out; the
/// names of those are returned as the second value.
pub fn contrast_maps(
    responses: &BTreeMap<String, Vec<f64>>,
    defs: &[ContrastDef],
) -> (Vec<Probe>, Vec<String>) {
    let mut probes = Vec::new();
    let mut missing = Vec::new();
    for d in defs {
        let get = |names: &[&str]| -> Option<Vec<f64>> {
            let maps: Vec<&Vec<f64>> = names
                .iter()
                .map(|n| responses.get(*n))
                .collect::<Option<_>>()?;
            let n = maps.first()?.len();
            let mut m = vec![0.0; n];
            for map in &maps {
                for (a, b) in m.iter_mut().zip(map.iter()) {
                    *a += b / maps.len() as f64;
                }
            }
            Some(m)
        };
        // The default-mode contrast keeps whatever task conditions ran.
        let minus: Vec<&str> = if d.network == Network::DefaultMode {
            d.minus
                .iter()
                .copied()
                .filter(|n| responses.contains_key(*n))
                .collect()
        } else {
            d.minus.clone()
        };
        match (get(&d.plus), get(&minus)) {
            (Some(p), Some(m)) if !minus.is_empty() => probes.push(Probe {
                name: d.name.to_string(),
                network: d.network,
                map: p.iter().zip(&m).map(|(a, b)| a - b).collect(),
            }),
            _ => missing.push(d.name.to_string()),
        }
    }
    (probes, missing)
}

/// A speech recording in a BIDS dataset's `stimuli/` folder: the first (in path order) sound file
/// with a word transcript next to it (`<name>_words.tsv`, DESIGN.md §4), which is how the
/// dataset says it is speech.
pub fn find_speech_recording(bids_dir: &Path) -> Option<PathBuf> {
    let root = bids_dir.join("stimuli");
    if !root.is_dir() {
        return None;
    }
    let mut found: Vec<PathBuf> = walkdir::WalkDir::new(&root)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| e.into_path())
        .filter(|p| {
            p.is_file()
                && crate::stimulus::timeline::media_kind(p)
                    == Some(crate::stimulus::timeline::MediaKind::Audio)
                && p.file_stem()
                    .map(|s| {
                        p.with_file_name(format!("{}_words.tsv", s.to_string_lossy()))
                            .is_file()
                    })
                    .unwrap_or(false)
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

// ---- generators ---------------------------------------------------------------------------

/// Pure-tone pips (cycling through 250, 500, 1,000, 2,000 and 4,000 Hz) with raised-cosine
/// ramps, amplitude 0.5.
pub fn tone_pips(n: usize, rate: u32) -> Vec<f32> {
    let r = rate as f64;
    let period = TONE_PIP_S + TONE_GAP_S;
    (0..n)
        .map(|i| {
            let t = i as f64 / r;
            let k = (t / period).floor();
            let local = t - k * period;
            if local >= TONE_PIP_S {
                return 0.0;
            }
            let f = TONE_FREQS_HZ[(k as usize) % TONE_FREQS_HZ.len()];
            let edge = local.min(TONE_PIP_S - local);
            let ramp = if edge < TONE_RAMP_S {
                0.5 - 0.5 * (std::f64::consts::PI * edge / TONE_RAMP_S).cos()
            } else {
                1.0
            };
            (0.5 * ramp * (2.0 * std::f64::consts::PI * f * local).sin()) as f32
        })
        .collect()
}

/// One grey-level frame of a sine grating at `deg` degrees, drifting at 2 Hz.
pub fn grating_frame(deg: f64, t: f64) -> Vec<u8> {
    let (s, c) = deg.to_radians().sin_cos();
    let n = FRAME_SIZE as f64;
    let mut out = Vec::with_capacity(FRAME_SIZE * FRAME_SIZE);
    for y in 0..FRAME_SIZE {
        for x in 0..FRAME_SIZE {
            let u = (x as f64 * c + y as f64 * s) / n;
            let phase = 2.0 * std::f64::consts::PI * (GRATING_CYCLES * u - GRATING_DRIFT_HZ * t);
            out.push((127.5 + 127.0 * phase.sin()).round().clamp(0.0, 255.0) as u8);
        }
    }
    out
}

/// splitmix64: a tiny seeded generator, so the images are the same on every machine.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A synthetic "scene": a two-colour gradient background with a few filled discs and
/// rectangles (objects with edges, colours and textures, as in an object localizer).
pub fn synthetic_image(seed: u64) -> Vec<u8> {
    let mut rng = SplitMix(0x7072_6f62_6573 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let n = FRAME_SIZE;
    let colour = |rng: &mut SplitMix| -> [f64; 3] {
        [rng.unit() * 255.0, rng.unit() * 255.0, rng.unit() * 255.0]
    };
    let (top, bottom) = (colour(&mut rng), colour(&mut rng));
    let mut img: Vec<[f64; 3]> = (0..n * n)
        .map(|i| {
            let a = (i / n) as f64 / (n - 1) as f64;
            [0, 1, 2].map(|c| top[c] * (1.0 - a) + bottom[c] * a)
        })
        .collect();
    let n_shapes = 3 + (rng.next() % 4) as usize;
    for _ in 0..n_shapes {
        let col = colour(&mut rng);
        let (cx, cy) = (rng.unit() * n as f64, rng.unit() * n as f64);
        let size = 12.0 + rng.unit() * 40.0;
        let disc = rng.next().is_multiple_of(2);
        let stripes = rng.next().is_multiple_of(3);
        for y in 0..n {
            for x in 0..n {
                let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                let inside = if disc {
                    dx * dx + dy * dy <= size * size
                } else {
                    dx.abs() <= size && dy.abs() <= 0.6 * size
                };
                if inside {
                    let shade = if stripes && ((x + y) / 4) % 2 == 0 {
                        0.6
                    } else {
                        1.0
                    };
                    img[y * n + x] = col.map(|v| v * shade);
                }
            }
        }
    }
    img.iter()
        .flat_map(|p| p.map(|v| v.round().clamp(0.0, 255.0) as u8))
        .collect()
}

/// Words of the probe's five fixed sentences, one every 0.3 s, until the condition ends.
pub fn transcript() -> Vec<TimedWord> {
    let words: Vec<&str> = SENTENCES
        .iter()
        .flat_map(|s| s.split_whitespace())
        .collect();
    let mut out = Vec::new();
    for (i, w) in words.iter().cycle().enumerate() {
        let onset = i as f64 * WORD_STEP_S;
        if onset + WORD_DURATION_S > PROBE_SECONDS as f64 {
            break;
        }
        out.push(TimedWord {
            onset: (onset * 1000.0).round() / 1000.0,
            duration: WORD_DURATION_S,
            text: w.to_string(),
        });
    }
    out
}

// ---- writers ------------------------------------------------------------------------------

/// 16-bit PCM mono WAV (the format every decoder reads), written atomically.
pub fn write_wav_pcm16(path: &Path, samples: &[f32], rate: u32) -> Result<()> {
    let data_len = (samples.len() * 2) as u32;
    let mut b = Vec::with_capacity(44 + samples.len() * 2);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        b.extend_from_slice(&v.to_le_bytes());
    }
    crate::util::write_atomic(path, &b)
}

fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            rgb,
            width as u32,
            height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::Other(format!("{}: cannot encode PNG: {e}", path.display())))?;
    crate::util::write_atomic(path, &bytes)
}

use image::ImageEncoder as _;

/// Encode grey-level frames (`frame(i)` gives `width * height` bytes) as a lossless FFV1 video in
/// Matroska, bit-exact (no random UIDs or timestamps), so the same frames give the same file.
pub fn encode_gray_video(
    path: &Path,
    width: usize,
    height: usize,
    fps: u32,
    n_frames: usize,
    mut frame: impl FnMut(usize) -> Vec<u8>,
) -> Result<()> {
    use ffmpeg_next as ff;
    let media = |message: String| Error::Media {
        path: path.to_path_buf(),
        kind: MediaErrorKind::Unreadable,
        message,
    };
    ff::init().map_err(|e| media(format!("FFmpeg init: {e}")))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| Error::OutputNotWritable {
        path: path.to_path_buf(),
        source,
    })?;
    let tmp = tempfile::Builder::new()
        .prefix(".probe-video.")
        .suffix(".mkv.tmp")
        .tempfile_in(dir)
        .map_err(|source| Error::OutputNotWritable {
            path: path.to_path_buf(),
            source,
        })?;
    let tmp_path = tmp.path().to_path_buf();
    {
        let mut octx = ff::format::output_as(&tmp_path, "matroska")
            .map_err(|e| media(format!("cannot open the Matroska muxer: {e}")))?;
        // SAFETY: `octx` owns a valid AVFormatContext; setting a flag bit is all we do.
        unsafe {
            (*octx.as_mut_ptr()).flags |= ff::ffi::AVFMT_FLAG_BITEXACT;
        }
        let codec = ff::encoder::find(ff::codec::Id::FFV1)
            .ok_or_else(|| media("this FFmpeg has no FFV1 encoder".into()))?;
        let global = octx
            .format()
            .flags()
            .contains(ff::format::Flags::GLOBAL_HEADER);
        let mut ost = octx
            .add_stream(codec)
            .map_err(|e| media(format!("add stream: {e}")))?;
        let mut enc = ff::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| media(format!("FFV1 encoder: {e}")))?;
        enc.set_width(width as u32);
        enc.set_height(height as u32);
        enc.set_format(ff::format::Pixel::BGRZ);
        enc.set_time_base(ff::Rational(1, fps as i32));
        enc.set_frame_rate(Some(ff::Rational(fps as i32, 1)));
        let mut flags = ff::codec::Flags::BITEXACT;
        if global {
            flags |= ff::codec::Flags::GLOBAL_HEADER;
        }
        enc.set_flags(flags);
        let mut enc = enc
            .open_as(codec)
            .map_err(|e| media(format!("open FFV1 encoder: {e}")))?;
        ost.set_parameters(&enc);
        ost.set_time_base(ff::Rational(1, fps as i32));
        octx.write_header()
            .map_err(|e| media(format!("write header: {e}")))?;
        let ost_tb = octx
            .stream(0)
            .map(|s| s.time_base())
            .unwrap_or(ff::Rational(1, fps as i32));
        let enc_tb = ff::Rational(1, fps as i32);
        let drain = |enc: &mut ff::encoder::Video, octx: &mut ff::format::context::Output| {
            let mut pkt = ff::Packet::empty();
            while enc.receive_packet(&mut pkt).is_ok() {
                pkt.set_stream(0);
                pkt.rescale_ts(enc_tb, ost_tb);
                pkt.write_interleaved(octx)
                    .map_err(|e| media(format!("write packet: {e}")))?;
            }
            Ok::<(), Error>(())
        };
        let mut vf = ff::frame::Video::new(ff::format::Pixel::BGRZ, width as u32, height as u32);
        for i in 0..n_frames {
            let grey = frame(i);
            if grey.len() != width * height {
                return Err(Error::Other(format!(
                    "probe video frame {i}: {} values for a {width}x{height} frame",
                    grey.len()
                )));
            }
            let stride = vf.stride(0);
            let data = vf.data_mut(0);
            for y in 0..height {
                let row = &mut data[y * stride..y * stride + 4 * width];
                for (px, &g) in row
                    .chunks_exact_mut(4)
                    .zip(&grey[y * width..(y + 1) * width])
                {
                    px.copy_from_slice(&[g, g, g, 0]);
                }
            }
            vf.set_pts(Some(i as i64));
            enc.send_frame(&vf)
                .map_err(|e| media(format!("encode frame {i}: {e}")))?;
            drain(&mut enc, &mut octx)?;
        }
        enc.send_eof()
            .map_err(|e| media(format!("flush encoder: {e}")))?;
        drain(&mut enc, &mut octx)?;
        octx.write_trailer()
            .map_err(|e| media(format!("write trailer: {e}")))?;
    }
    tmp.persist(path).map_err(|e| Error::OutputNotWritable {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_fits_the_condition() {
        let w = transcript();
        assert!(w.len() >= 30, "{}", w.len());
        assert!(
            w.iter()
                .all(|w| w.onset + w.duration <= PROBE_SECONDS as f64)
        );
        assert_eq!(w[0].text, "The");
    }

    #[test]
    fn tones_are_ramped_pips() {
        let t = tone_pips(AUDIO_RATE as usize, AUDIO_RATE);
        assert_eq!(t[0], 0.0);
        let peak = t.iter().fold(0.0f32, |a, b| a.max(b.abs()));
        assert!((peak - 0.5).abs() < 1e-3, "{peak}");
        // the gap between pips is silent
        let gap = (0.45 * AUDIO_RATE as f64) as usize;
        assert_eq!(t[gap], 0.0);
    }

    #[test]
    fn every_contrast_uses_known_conditions() {
        let names: Vec<&str> = conditions().iter().map(|c| c.name).collect();
        for d in contrast_defs() {
            for n in d.plus.iter().chain(&d.minus) {
                assert!(names.contains(n), "{} uses unknown condition {n}", d.name);
            }
        }
    }

    #[test]
    fn contrasts_skip_missing_conditions() {
        let mut r = BTreeMap::new();
        for c in conditions() {
            if c.name != "speech" {
                let v = if c.name == "tones" { 2.0 } else { 1.0 };
                r.insert(c.name.to_string(), vec![v; 4]);
            }
        }
        let (probes, missing) = contrast_maps(&r, &contrast_defs());
        assert_eq!(missing, vec!["speechVsSilence", "speechVsTones"]);
        let tones = probes.iter().find(|p| p.name == "tonesVsSilence").unwrap();
        assert_eq!(tones.map, vec![1.0; 4]);
        let dmn = probes
            .iter()
            .find(|p| p.name == "baselineVsAllProbes")
            .unwrap();
        // baseline 1 minus mean(tones 2, four others at 1) = 1 - 6/5
        assert!((dmn.map[0] + 0.2).abs() < 1e-12);
    }

    #[test]
    fn stimuli_are_written_and_deterministic() {
        let d = tempfile::tempdir().unwrap();
        let a = write_probe_stimuli(&d.path().join("a"), None).unwrap();
        let b = write_probe_stimuli(&d.path().join("b"), None).unwrap();
        for (x, y) in [
            (&a.silence, &b.silence),
            (&a.tones, &b.tones),
            (&a.blank, &b.blank),
            (&a.moving_gratings, &b.moving_gratings),
            (&a.images[0], &b.images[0]),
        ] {
            assert_eq!(
                std::fs::read(x).unwrap(),
                std::fs::read(y).unwrap(),
                "{x:?}"
            );
        }
        // the video decodes to the frames we encoded (FFV1 is lossless)
        let info = crate::stimulus::video::probe::VideoInfo::open(&a.moving_gratings).unwrap();
        assert_eq!(info.n_frames(), PROBE_SECONDS * VIDEO_FPS as usize);
        assert!(
            (info.duration - PROBE_SECONDS as f64).abs() < 0.1,
            "{}",
            info.duration
        );
        let c = conditions();
        assert!(
            condition_timeline(&c[2], &a).is_none(),
            "speech without a recording"
        );
        let t = condition_timeline(&c[6], &a).unwrap();
        assert_eq!(t.visual.len(), N_IMAGES);
        assert_eq!(t.audio.len(), 1);
    }
}
