//! The SeamlessM4T filterbank that feeds Wav2Vec-BERT (transformers `SeamlessM4TFeatureExtractor`,
//! SPEC §5.4 step 4), written step by step in the reference's precision.
//!
//! Per chunk: waveform × 2^15 (Kaldi's 16-bit scale); frames of 400 samples every 160, no
//! centering; per frame, subtract the frame mean, pre-emphasis 0.97 (`y0 = 0.03·x0`), povey window
//! (`hanning(400)^0.85`), zero-pad to 512 and real FFT in f64; the spectrum is stored as complex64
//! (this rounding is part of the reference), the power `|X|²` taken in f64; 80 Kaldi mel filters
//! (triangles in mel space over 20 Hz..8 kHz, no normalisation), floor 1.192092955078125e-07,
//! natural log, then float32. Then per-mel-bin CMVN over the chunk with the unbiased variance, in
//! float32 with numpy's (pairwise, per mel bin) reduction order; an odd frame count gets one
//! frame of `padding_value`; and consecutive frame pairs are concatenated into 160-dim rows
//! (stride 2). Given the same waveform the output is bit-identical to transformers'.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

const FRAME_LENGTH: usize = 400;
const HOP_LENGTH: usize = 160;
const FFT_LENGTH: usize = 512;
const N_BINS: usize = FFT_LENGTH / 2 + 1;
const PREEMPHASIS: f64 = 0.97;
const MEL_FLOOR: f64 = 1.192092955078125e-07;
const MIN_FREQUENCY: f64 = 20.0;

/// The settings read from the model's `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FbankConfig {
    #[serde(default = "default_mels")]
    pub num_mel_bins: usize,
    #[serde(default = "default_rate")]
    pub sampling_rate: u32,
    #[serde(default = "default_stride")]
    pub stride: usize,
    /// Value of the frame added to make the frame count a multiple of `stride`. The hub file
    /// says 1 (SPEC §5.4 marks it UNVERIFIED; the fixture copies it).
    #[serde(default = "default_padding")]
    pub padding_value: f32,
    #[serde(default)]
    pub feature_extractor_type: Option<String>,
}

fn default_mels() -> usize {
    80
}
fn default_rate() -> u32 {
    16000
}
fn default_stride() -> usize {
    2
}
fn default_padding() -> f32 {
    1.0
}

impl Default for FbankConfig {
    fn default() -> Self {
        FbankConfig {
            num_mel_bins: 80,
            sampling_rate: 16000,
            stride: 2,
            padding_value: 1.0,
            feature_extractor_type: Some("SeamlessM4TFeatureExtractor".into()),
        }
    }
}

impl FbankConfig {
    /// Read `preprocessor_config.json`; other extractor types are refused because their math differs.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: FbankConfig = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
            fix: "use the preprocessor_config.json shipped with facebook/w2v-bert-2.0".into(),
        })?;
        if let Some(t) = &cfg.feature_extractor_type
            && t != "SeamlessM4TFeatureExtractor"
        {
            return Err(Error::Model {
                path: path.to_path_buf(),
                message: format!(
                    "feature_extractor_type is '{t}', only SeamlessM4TFeatureExtractor is implemented"
                ),
                fix: "point --model at a Wav2Vec2-BERT folder (facebook/w2v-bert-2.0)".into(),
            });
        }
        if cfg.sampling_rate != 16000 || cfg.num_mel_bins == 0 || cfg.stride == 0 {
            return Err(Error::Model {
                path: path.to_path_buf(),
                message: format!(
                    "unsupported settings: sampling_rate {} num_mel_bins {} stride {}",
                    cfg.sampling_rate, cfg.num_mel_bins, cfg.stride
                ),
                fix: "the Kaldi filterbank here is defined for 16 kHz input".into(),
            });
        }
        Ok(cfg)
    }
}

/// Precomputed window, mel filters and FFT tables.
#[derive(Debug, Clone)]
pub struct Fbank {
    cfg: FbankConfig,
    window: Vec<f64>,
    /// Per mel bin: first FFT bin with a non-zero weight, and the weights from there.
    mel: Vec<(usize, Vec<f64>)>,
    fft: Fft512,
}

/// The filterbank output ready for the model: `(n_frames, feature_dim)` row-major float32.
#[derive(Debug, Clone, PartialEq)]
pub struct InputFeatures {
    pub data: Vec<f32>,
    pub n_frames: usize,
    pub dim: usize,
}

impl Fbank {
    pub fn new(cfg: FbankConfig) -> Self {
        let window = povey_window(FRAME_LENGTH);
        let mel = kaldi_mel_filters(
            N_BINS,
            cfg.num_mel_bins,
            MIN_FREQUENCY,
            (cfg.sampling_rate / 2) as f64,
            cfg.sampling_rate as f64,
        );
        let mel = mel
            .into_iter()
            .map(|w| {
                let first = w.iter().position(|v| *v != 0.0).unwrap_or(0);
                let last = w.iter().rposition(|v| *v != 0.0).unwrap_or(0);
                (first, w[first..=last.max(first)].to_vec())
            })
            .collect();
        Fbank {
            cfg,
            window,
            mel,
            fft: Fft512::new(),
        }
    }

    pub fn config(&self) -> &FbankConfig {
        &self.cfg
    }

    /// Number of 25 ms frames for `n` samples (`1 + floor((n - 400) / 160)`).
    pub fn n_frames(n_samples: usize) -> usize {
        if n_samples < FRAME_LENGTH {
            0
        } else {
            1 + (n_samples - FRAME_LENGTH) / HOP_LENGTH
        }
    }

    /// Log-mel filterbank, `(frames, n_mels)` float32 row-major, before CMVN.
    pub fn log_mel(&self, wav: &[f32]) -> Vec<f32> {
        use rayon::prelude::*;
        let n_mels = self.cfg.num_mel_bins;
        let n_frames = Self::n_frames(wav.len());
        let mut out = vec![0f32; n_frames * n_mels];
        out.par_chunks_mut(n_mels * 64)
            .enumerate()
            .for_each(|(c, block)| {
                let mut buf = [0f64; FFT_LENGTH];
                let mut power = [0f64; N_BINS];
                for (r, row) in block.chunks_mut(n_mels).enumerate() {
                    let f = c * 64 + r;
                    let frame = &wav[f * HOP_LENGTH..f * HOP_LENGTH + FRAME_LENGTH];
                    // float32 waveform × 2^15 is exact; the buffer is float64 as in numpy.
                    for (b, x) in buf.iter_mut().zip(frame) {
                        *b = (*x * 32768.0f32) as f64;
                    }
                    buf[FRAME_LENGTH..].iter_mut().for_each(|b| *b = 0.0);
                    let mean = pairwise_sum(&buf[..FRAME_LENGTH]) / FRAME_LENGTH as f64;
                    buf[..FRAME_LENGTH].iter_mut().for_each(|b| *b -= mean);
                    // numpy's `buffer[1:n] -= 0.97 * buffer[:n-1]` reads the original values.
                    for i in (1..FRAME_LENGTH).rev() {
                        buf[i] -= PREEMPHASIS * buf[i - 1];
                    }
                    buf[0] *= 1.0 - PREEMPHASIS;
                    for (b, w) in buf.iter_mut().zip(&self.window) {
                        *b *= w;
                    }
                    let spec = self.fft.rfft(&buf);
                    for (p, (re, im)) in power.iter_mut().zip(spec.iter()) {
                        // Stored as complex64, then |X| in float64, squared.
                        let (re, im) = (*re as f32 as f64, *im as f32 as f64);
                        let a = re.hypot(im);
                        *p = a * a;
                    }
                    for (m, (first, w)) in self.mel.iter().enumerate() {
                        let e: f64 = w.iter().zip(&power[*first..]).map(|(a, b)| a * b).sum();
                        row[m] = e.max(MEL_FLOOR).ln() as f32;
                    }
                }
            });
        out
    }

    /// The full extractor: log-mel, CMVN, padding, stride stacking. Fails on fewer than 400
    /// samples (the reference crashes there: no frame fits).
    pub fn features(&self, wav: &[f32]) -> Result<InputFeatures> {
        let n_mels = self.cfg.num_mel_bins;
        let n_frames = Self::n_frames(wav.len());
        if n_frames < 2 {
            return Err(Error::FeatureShape {
                modality: "audio".into(),
                message: format!(
                    "{} samples at 16 kHz is too short for the filterbank (needs at least 560 samples, 35 ms)",
                    wav.len()
                ),
            });
        }
        let mut x = self.log_mel(wav);
        cmvn_f32(&mut x, n_frames, n_mels);
        let stride = self.cfg.stride;
        let padded = n_frames.div_ceil(stride) * stride;
        x.resize(padded * n_mels, self.cfg.padding_value);
        Ok(InputFeatures {
            data: x,
            n_frames: padded / stride,
            dim: n_mels * stride,
        })
    }
}

/// numpy's pairwise summation for a contiguous f64 block (blocks of 8 partial sums up to 128
/// elements, then halves). Only the frame mean uses it; the difference from a plain sum is
/// ~1e-16 relative, kept for faithfulness.
fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |s, v| s + v)
    } else if n <= 128 {
        let mut r = [0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i + 8 <= n {
            for k in 0..8 {
                r[k] += a[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// numpy's float32 pairwise summation (`FLOAT_pairwise_sum`): 8 float32 partial sums over blocks
/// of up to 128 elements, larger runs split in halves at a multiple of 8. Used for the CMVN
/// statistics, where the summation order is not a detail: see [`cmvn_f32`].
fn pairwise_sum_f32(a: &[f32]) -> f32 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |s, v| s + v)
    } else if n <= 128 {
        let mut r = [0f32; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i + 8 <= n {
            for k in 0..8 {
                r[k] += a[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum_f32(&a[..n2]) + pairwise_sum_f32(&a[n2..])
    }
}

/// Per-column `(x - mean) / sqrt(var(ddof=1) + 1e-7)` in float32, with numpy's reduction order.
///
/// The extractor's filterbank is the transpose of a C-ordered `(mels, frames)` array, so numpy's
/// `x.mean(0)` and `x.var(0)` reduce along memory-contiguous columns, i.e. with pairwise summation
/// per mel bin, not a running sum over frames. The order matters far beyond float32 noise: the
/// rows of a digitally silent frame are the same floor value in every mel bin, so after CMVN they
/// differ only through the per-bin statistics (spread ~2e-3 across the 160 inputs), and the
/// model's input LayerNorm divides by that spread (~250× amplification). On the e2e movie a running
/// sum moves the raw means by 2.9e-4, the silent rows by 2.6e-5, and the 2 Hz features by 4.9e-3
/// (torch's own model on both inputs); numpy's order reproduces the reference bit for bit.
fn cmvn_f32(x: &mut [f32], rows: usize, cols: usize) {
    let mut col = vec![0f32; rows];
    let mut mean = vec![0f32; cols];
    let mut scale = vec![0f32; cols];
    let denom = (rows.saturating_sub(1)).max(1) as f32;
    for c in 0..cols {
        for (dst, r) in col.iter_mut().zip(x.chunks(cols)) {
            *dst = r[c];
        }
        let m = pairwise_sum_f32(&col) / rows as f32;
        for v in col.iter_mut() {
            let d = *v - m;
            *v = d * d;
        }
        mean[c] = m;
        scale[c] = (pairwise_sum_f32(&col) / denom + 1e-7f32).sqrt();
    }
    for r in x.chunks_mut(cols) {
        for ((v, m), s) in r.iter_mut().zip(&mean).zip(&scale) {
            *v = (*v - m) / s;
        }
    }
}

/// `np.power(np.hanning(M), 0.85)` with numpy's formula `0.5 + 0.5·cos(π·n/(M-1))`, n = 1-M..M-1 step 2.
fn povey_window(m: usize) -> Vec<f64> {
    (0..m)
        .map(|i| {
            let n = 1.0 - m as f64 + 2.0 * i as f64;
            (0.5 + 0.5 * (std::f64::consts::PI * n / (m as f64 - 1.0)).cos()).powf(0.85)
        })
        .collect()
}

fn hertz_to_mel_kaldi(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

/// transformers `mel_filter_bank(..., norm=None, mel_scale="kaldi", triangularize_in_mel_space=True)`,
/// returned per mel filter (n_mels × n_freq).
fn kaldi_mel_filters(
    n_freq: usize,
    n_mels: usize,
    f_min: f64,
    f_max: f64,
    sr: f64,
) -> Vec<Vec<f64>> {
    let (mel_min, mel_max) = (hertz_to_mel_kaldi(f_min), hertz_to_mel_kaldi(f_max));
    // np.linspace(mel_min, mel_max, n_mels + 2): start + k·step, last point exactly mel_max.
    let num = n_mels + 2;
    let step = (mel_max - mel_min) / (num - 1) as f64;
    let mut mel_freqs: Vec<f64> = (0..num).map(|k| k as f64 * step + mel_min).collect();
    mel_freqs[num - 1] = mel_max;
    let bin_width = sr / ((n_freq - 1) * 2) as f64;
    let fft_mels: Vec<f64> = (0..n_freq)
        .map(|k| hertz_to_mel_kaldi(bin_width * k as f64))
        .collect();
    let diff: Vec<f64> = mel_freqs.windows(2).map(|w| w[1] - w[0]).collect();
    (0..n_mels)
        .map(|m| {
            fft_mels
                .iter()
                .map(|fm| {
                    let down = -(mel_freqs[m] - fm) / diff[m];
                    let up = (mel_freqs[m + 2] - fm) / diff[m + 1];
                    0f64.max(down.min(up))
                })
                .collect()
        })
        .collect()
}

/// A 512-point real FFT in f64: a 256-point complex radix-2 FFT of the even/odd-packed input,
/// then the standard split into the 257 non-negative frequencies.
#[derive(Debug, Clone)]
struct Fft512 {
    /// exp(-2πik/256), k < 128.
    tw256: Vec<(f64, f64)>,
    /// exp(-2πik/512), k <= 256.
    tw512: Vec<(f64, f64)>,
    bitrev: Vec<usize>,
}

impl Fft512 {
    fn new() -> Self {
        let ang = |k: usize, n: usize| -2.0 * std::f64::consts::PI * k as f64 / n as f64;
        let tw256 = (0..128)
            .map(|k| (ang(k, 256).cos(), ang(k, 256).sin()))
            .collect();
        let tw512 = (0..=256)
            .map(|k| (ang(k, 512).cos(), ang(k, 512).sin()))
            .collect();
        let bitrev = (0..256usize)
            .map(|i| (i as u8).reverse_bits() as usize)
            .collect();
        Fft512 {
            tw256,
            tw512,
            bitrev,
        }
    }

    fn rfft(&self, x: &[f64; FFT_LENGTH]) -> [(f64, f64); N_BINS] {
        const H: usize = FFT_LENGTH / 2;
        let mut z = [(0f64, 0f64); H];
        for (i, zi) in z.iter_mut().enumerate() {
            let j = self.bitrev[i];
            *zi = (x[2 * j], x[2 * j + 1]);
        }
        let mut len = 2;
        while len <= H {
            let step = H / len;
            for start in (0..H).step_by(len) {
                for k in 0..len / 2 {
                    let (wr, wi) = self.tw256[k * step];
                    let (ar, ai) = z[start + k];
                    let (br, bi) = z[start + k + len / 2];
                    let (tr, ti) = (br * wr - bi * wi, br * wi + bi * wr);
                    z[start + k] = (ar + tr, ai + ti);
                    z[start + k + len / 2] = (ar - tr, ai - ti);
                }
            }
            len *= 2;
        }
        // X[k] = E[k] + W^k O[k], with E = (Z[k] + conj Z[H-k]) / 2, O = (Z[k] - conj Z[H-k]) / 2i.
        let mut out = [(0f64, 0f64); N_BINS];
        for (k, o) in out.iter_mut().enumerate() {
            let (zr, zi) = z[k % H];
            let (cr, ci) = z[(H - k % H) % H];
            let (cr, ci) = (cr, -ci);
            let (er, ei) = ((zr + cr) * 0.5, (zi + ci) * 0.5);
            // (z - c) / (2i) = (zi - ci)/2 - i (zr - cr)/2
            let (or, oi) = ((zi - ci) * 0.5, -(zr - cr) * 0.5);
            let (wr, wi) = self.tw512[k];
            *o = (er + or * wr - oi * wi, ei + or * wi + oi * wr);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CMVN against numpy bit for bit: `x = a.T` for a C-ordered (3, 1500) float32 array (the
    /// extractor's layout), `(x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + 1e-7)`. Values: 40 %
    /// floor (-15.942385), the rest `u·30 − 5` from a 64-bit LCG. A running sum over frames
    /// gives different means for columns 0 and 2, so this fails without numpy's pairwise order.
    #[test]
    fn cmvn_matches_numpy_bits() {
        let (rows, cols) = (1500, 3);
        let mut s: u64 = 12345;
        let mut x = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 40) as f64 / (1u64 << 24) as f64;
                x[r * cols + c] = if u < 0.4 {
                    -15.942385
                } else {
                    (u * 30.0 - 5.0) as f32
                };
            }
        }
        cmvn_f32(&mut x, rows, cols);
        let bits = |r: usize| -> Vec<u32> {
            x[r * cols..(r + 1) * cols]
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(0), vec![0xbf9a5ca0, 0xbf9986e4, 0x3f8f4670]);
        assert_eq!(bits(777), vec![0x3f64ac5b, 0xbf9986e4, 0xbf9b7bda]);
    }

    /// The FFT against a direct DFT.
    #[test]
    fn rfft_matches_dft() {
        let mut x = [0f64; FFT_LENGTH];
        for (i, v) in x.iter_mut().enumerate() {
            *v = ((i * 7919) % 613) as f64 / 613.0 - 0.5 + (i as f64 * 0.01).sin();
        }
        let got = Fft512::new().rfft(&x);
        let mut worst = 0f64;
        for (k, g) in got.iter().enumerate() {
            let (mut re, mut im) = (0f64, 0f64);
            for (n, v) in x.iter().enumerate() {
                let a = -2.0 * std::f64::consts::PI * (k * n) as f64 / FFT_LENGTH as f64;
                re += v * a.cos();
                im += v * a.sin();
            }
            worst = worst.max((g.0 - re).abs()).max((g.1 - im).abs());
        }
        assert!(worst < 1e-10, "max |fft - dft| = {worst}");
    }

    #[test]
    fn frame_counts() {
        assert_eq!(Fbank::n_frames(399), 0);
        assert_eq!(Fbank::n_frames(400), 1);
        assert_eq!(Fbank::n_frames(176_000), 1098);
        assert_eq!(Fbank::n_frames(47_840), 297);
    }

    /// Kaldi triangles: every filter peaks at 1 between its edges and is 0 outside.
    #[test]
    fn mel_filters_are_triangles() {
        let f = kaldi_mel_filters(N_BINS, 80, 20.0, 8000.0, 16000.0);
        assert_eq!(f.len(), 80);
        for w in &f {
            assert!(w.iter().all(|v| (0.0..=1.0).contains(v)));
            assert!(w.iter().cloned().fold(0.0, f64::max) > 0.3);
        }
        assert_eq!(f[0][0], 0.0, "DC is below 20 Hz");
    }

    #[test]
    fn odd_frame_count_is_padded_with_padding_value() {
        let fb = Fbank::new(FbankConfig::default());
        let wav: Vec<f32> = (0..400 + 160 * 4)
            .map(|i| ((i as f32) * 0.37).sin())
            .collect();
        let feats = fb.features(&wav).unwrap();
        assert_eq!(Fbank::n_frames(wav.len()), 5);
        assert_eq!((feats.n_frames, feats.dim), (3, 160));
        assert!(feats.data[2 * 160 + 80..].iter().all(|v| *v == 1.0));
    }
}
