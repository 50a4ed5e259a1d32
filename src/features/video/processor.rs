//! V-JEPA2's video processor (`VJEPA2VideoProcessor`, SPEC §5.5), reproduced to the bit.
//!
//! The reference resizes uint8 frames so the shortest edge is `int(crop * 256 / 224)`, with
//! torchvision's antialiased bilinear filter, center-crops to `crop`, then applies the fused
//! rescale + ImageNet normalization in float32. The resize is where ports usually drift: torch
//! 2.6 (the reference environment) returns exactly `round_half_even` of ATen's float32
//! antialiased bilinear result, so that is what [`Resizer`] computes, with ATen's weights
//! (`_compute_indices_min_size_weights_aa`), the same mixed f32/f64 arithmetic, the width pass
//! before the height pass, and a fused multiply-add accumulation. An exact float64 resize would
//! flip a few hundred pixels by one grey level at .5 ties (tests/fixtures/hf/README.md §3).
//!
//! Only the pixels inside the center crop are computed: each output pixel of the separable
//! filter depends on its own row and column weights alone, so cropping first changes no value
//! and saves about half of the work on 16:9 video.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

#[cfg(target_arch = "x86_64")]
mod avx2;

/// What `video_preprocessor_config.json` says, reduced to what the reference uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    /// Target of the shortest edge after resizing (`size.shortest_edge`).
    pub shortest_edge: usize,
    pub crop_height: usize,
    pub crop_width: usize,
    /// ImageNet mean and std by default.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// `rescale_factor` (1/255): folded into mean and std as the reference does.
    pub rescale_factor: f64,
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    size: Option<RawSize>,
    crop_size: Option<RawCrop>,
    image_mean: Option<Vec<f64>>,
    image_std: Option<Vec<f64>>,
    rescale_factor: Option<f64>,
    resample: Option<u32>,
    do_resize: Option<bool>,
    do_center_crop: Option<bool>,
    do_normalize: Option<bool>,
    do_rescale: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct RawSize {
    shortest_edge: Option<usize>,
    height: Option<usize>,
    width: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawCrop {
    Square(usize),
    Rect { height: usize, width: usize },
}

/// The file name HF writes for video processors.
pub const PROCESSOR_FILE: &str = "video_preprocessor_config.json";

impl ProcessorConfig {
    /// The released `facebook/vjepa2-vitg-fpc64-256` settings, for a crop of `crop` pixels.
    pub fn for_crop(crop: usize) -> Self {
        Self {
            shortest_edge: crop * 256 / 224,
            crop_height: crop,
            crop_width: crop,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            rescale_factor: 1.0 / 255.0,
        }
    }

    /// Read `video_preprocessor_config.json` (or `preprocessor_config.json`) from a model folder.
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        let path = [PROCESSOR_FILE, "preprocessor_config.json"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::Model {
                path: dir.to_path_buf(),
                message: format!("no {PROCESSOR_FILE} in the V-JEPA2 model folder"),
                fix: "download the whole facebook/vjepa2-vitg-fpc64-256 folder (it ships video_preprocessor_config.json)".into(),
            })?;
        Self::from_json_file(&path)
    }

    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |message: String| Error::Json {
            path: path.to_path_buf(),
            message,
            fix: "use the video_preprocessor_config.json shipped with the model".into(),
        };
        let raw: RawConfig = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        // The reference always resizes, crops, rescales and normalizes; a config that turns a
        // step off describes a different model input, so we refuse it instead of guessing.
        for (flag, name) in [
            (raw.do_resize, "do_resize"),
            (raw.do_center_crop, "do_center_crop"),
            (raw.do_normalize, "do_normalize"),
            (raw.do_rescale, "do_rescale"),
        ] {
            if flag == Some(false) {
                return Err(bad(format!(
                    "'{name}' is false; only the full V-JEPA2 preprocessing is supported"
                )));
            }
        }
        if let Some(r) = raw.resample
            && r != 2
        {
            return Err(bad(format!(
                "'resample' is {r}; only 2 (bilinear) is supported"
            )));
        }
        let (crop_height, crop_width) = match raw.crop_size {
            Some(RawCrop::Square(c)) => (c, c),
            Some(RawCrop::Rect { height, width }) => (height, width),
            None => return Err(bad("'crop_size' is missing".into())),
        };
        let shortest_edge = match raw.size {
            Some(RawSize {
                shortest_edge: Some(s),
                ..
            }) => s,
            Some(RawSize {
                height: Some(_),
                width: Some(_),
                ..
            }) => {
                return Err(bad(
                    "'size' gives height/width; only 'shortest_edge' is supported".into(),
                ));
            }
            _ => return Err(bad("'size.shortest_edge' is missing".into())),
        };
        let three = |v: Option<Vec<f64>>, name: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match v {
                None => Ok(default),
                Some(v) if v.len() == 3 => Ok([v[0] as f32, v[1] as f32, v[2] as f32]),
                Some(v) => Err(bad(format!("'{name}' has {} values, expected 3", v.len()))),
            }
        };
        let cfg = Self {
            shortest_edge,
            crop_height,
            crop_width,
            mean: three(raw.image_mean, "image_mean", [0.485, 0.456, 0.406])?,
            std: three(raw.image_std, "image_std", [0.229, 0.224, 0.225])?,
            rescale_factor: raw.rescale_factor.unwrap_or(1.0 / 255.0),
        };
        if cfg.shortest_edge < cfg.crop_height.min(cfg.crop_width)
            || cfg.crop_height == 0
            || cfg.crop_width == 0
        {
            return Err(bad(format!(
                "shortest_edge {} is smaller than the crop {}x{}",
                cfg.shortest_edge, cfg.crop_height, cfg.crop_width
            )));
        }
        Ok(cfg)
    }

    /// Resize and crop geometry for a `height` x `width` frame.
    pub fn geometry(&self, height: usize, width: usize) -> Geometry {
        // transformers `get_resize_output_image_size` with `shortest_edge`: the short side
        // becomes `shortest_edge` and the long side `int(shortest_edge * long / short)`.
        let (short, long) = if height <= width {
            (height, width)
        } else {
            (width, height)
        };
        let new_long = ((self.shortest_edge * long) as f64 / short as f64) as usize;
        let (rh, rw) = if height <= width {
            (self.shortest_edge, new_long)
        } else {
            (new_long, self.shortest_edge)
        };
        // Center crop offsets use `int((size - crop) / 2)` (truncation, not rounding: rounding
        // would move the 5:4 fixture's crop by a column and change pixels by up to 3.2).
        let top = ((rh.saturating_sub(self.crop_height)) as f64 / 2.0) as usize;
        let left = ((rw.saturating_sub(self.crop_width)) as f64 / 2.0) as usize;
        Geometry {
            in_height: height,
            in_width: width,
            resized_height: rh,
            resized_width: rw,
            top,
            left,
            crop_height: self.crop_height,
            crop_width: self.crop_width,
        }
    }

    /// `mean / rescale_factor` and `std / rescale_factor`, rounded to f32 as the reference's
    /// fused rescale+normalize does (`torch.tensor(mean) * (1.0 / rescale_factor)`).
    fn fused_mean_std(&self) -> ([f32; 3], [f32; 3]) {
        let inv = (1.0 / self.rescale_factor) as f32;
        (self.mean.map(|m| m * inv), self.std.map(|s| s * inv))
    }

    /// Normalize one cropped frame (CHW uint8) into `out` (CHW float32):
    /// `(x - 255*mean) / (255*std)` in f32, NaN set to 0 (the reference's `_fix_pixel_values`).
    pub fn normalize_into(&self, cropped: &[u8], out: &mut [f32]) {
        let plane = self.crop_height * self.crop_width;
        debug_assert_eq!(cropped.len(), 3 * plane);
        debug_assert_eq!(out.len(), 3 * plane);
        let (mean, std) = self.fused_mean_std();
        for c in 0..3 {
            let (m, s) = (mean[c], std[c]);
            for (o, &x) in out[c * plane..(c + 1) * plane]
                .iter_mut()
                .zip(&cropped[c * plane..(c + 1) * plane])
            {
                let v = (x as f32 - m) / s;
                *o = if v.is_nan() { 0.0 } else { v };
            }
        }
    }
}

/// Where a frame goes through resize and crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub in_height: usize,
    pub in_width: usize,
    pub resized_height: usize,
    pub resized_width: usize,
    pub top: usize,
    pub left: usize,
    pub crop_height: usize,
    pub crop_width: usize,
}

/// Antialiased bilinear weights of one axis, as ATen computes them for float input.
#[derive(Debug, Clone)]
struct AxisWeights {
    /// First input index of each output index.
    start: Vec<usize>,
    /// Number of taps of each output index.
    len: Vec<usize>,
    /// `taps` weights per output index (zero-padded).
    weights: Vec<f32>,
    taps: usize,
}

impl AxisWeights {
    /// ATen `_compute_indices_min_size_weights_aa` (interp_size 2, bilinear filter), with its
    /// exact mix of float and double arithmetic; `outputs` selects the output indices needed.
    fn new(in_size: usize, out_size: usize, outputs: std::ops::Range<usize>) -> Self {
        let scale = in_size as f32 / out_size as f32;
        let support: f32 = if scale >= 1.0 { scale } else { 1.0 };
        let invscale: f32 = if scale >= 1.0 {
            (1.0f64 / scale as f64) as f32
        } else {
            1.0
        };
        let taps = (support as f64).ceil() as usize * 2 + 1;
        let n = outputs.len();
        let mut start = Vec::with_capacity(n);
        let mut len = Vec::with_capacity(n);
        let mut weights = vec![0f32; n * taps];
        for (k, i) in outputs.enumerate() {
            let center = (scale as f64 * (i as f64 + 0.5)) as f32;
            let xmin = (((center - support) as f64 + 0.5) as i64).max(0);
            let xmax = (((center + support) as f64 + 0.5) as i64).min(in_size as i64);
            let xsize = (xmax - xmin).max(0) as usize;
            let w = &mut weights[k * taps..k * taps + xsize.min(taps)];
            let mut total = 0f32;
            for (j, wj) in w.iter_mut().enumerate() {
                let x = (((j as i64 + xmin) as f32 - center) as f64 + 0.5) * invscale as f64;
                let x = (x as f32).abs();
                *wj = if x < 1.0 { 1.0 - x } else { 0.0 };
                total += *wj;
            }
            if total != 0.0 {
                for wj in w.iter_mut() {
                    *wj /= total;
                }
            }
            start.push(xmin as usize);
            len.push(xsize.min(taps));
        }
        Self {
            start,
            len,
            weights,
            taps,
        }
    }

    /// The input indices any output reads.
    fn span(&self) -> std::ops::Range<usize> {
        let lo = self.start.iter().copied().min().unwrap_or(0);
        let hi = (0..self.start.len())
            .map(|k| self.start[k] + self.len[k])
            .max()
            .unwrap_or(0);
        lo..hi
    }

    fn taps_of(&self, k: usize) -> (usize, &[f32]) {
        (
            self.start[k],
            &self.weights[k * self.taps..k * self.taps + self.len[k]],
        )
    }
}

/// Resize + center crop for one input size, with the weights computed once.
#[derive(Debug, Clone)]
pub struct Resizer {
    geometry: Geometry,
    cols: AxisWeights,
    rows: AxisWeights,
    /// Input rows the height pass reads: the width pass runs on these only.
    row_span: std::ops::Range<usize>,
    /// Input columns the width pass reads.
    col_span: std::ops::Range<usize>,
}

impl Resizer {
    pub fn new(geometry: Geometry) -> Self {
        let g = geometry;
        let cols = AxisWeights::new(g.in_width, g.resized_width, g.left..g.left + g.crop_width);
        let rows = AxisWeights::new(g.in_height, g.resized_height, g.top..g.top + g.crop_height);
        Self {
            geometry,
            row_span: rows.span(),
            col_span: cols.span(),
            cols,
            rows,
        }
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The input rows the resize reads (a crop never needs the whole picture).
    pub fn source_rows(&self) -> std::ops::Range<usize> {
        self.row_span.clone()
    }

    /// The input columns the resize reads.
    pub fn source_cols(&self) -> std::ops::Range<usize> {
        self.col_span.clone()
    }

    /// Resize and crop an RGB24 frame (`height` rows of `stride` bytes, HWC) into `out`
    /// (CHW uint8, `3 * crop_height * crop_width`).
    pub fn resize_crop(&self, rgb: &[u8], stride: usize, out: &mut [u8]) {
        self.resize_crop_part(rgb, stride, (0, 0), out);
    }

    /// [`Self::resize_crop`] from a part of the frame whose first pixel is at `(top, left)`
    /// of the whole picture; it must hold [`Self::source_rows`] x [`Self::source_cols`].
    pub fn resize_crop_part(
        &self,
        rgb: &[u8],
        stride: usize,
        (top, left): (usize, usize),
        out: &mut [u8],
    ) {
        let g = self.geometry;
        assert!(
            top <= self.row_span.start && left <= self.col_span.start,
            "the frame part starts after the pixels the resize reads"
        );
        assert!(
            rgb.len() >= (self.row_span.end - top - 1) * stride + (self.col_span.end - left) * 3,
            "frame buffer too small"
        );
        assert_eq!(out.len(), 3 * g.crop_height * g.crop_width);
        let src = Source {
            data: rgb,
            stride,
            top,
            left,
        };
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("avx2")
            {
                // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                unsafe { avx2::resize_crop(self, &src, out) };
                return;
            }
        }
        self.resize_crop_generic(&src, out);
    }

    /// The separable filter: width pass into an f32 plane, then height pass, then round half
    /// to even. `mul_add` is a single fused instruction where FMA is enabled, and always has
    /// fused rounding, which is what the reference's compiled loop does.
    #[inline(always)]
    fn resize_crop_generic(&self, src: &Source, out: &mut [u8]) {
        let mut tmp = vec![0f32; 3 * self.row_span.len() * self.geometry.crop_width];
        self.width_pass(src, &mut tmp);
        self.height_pass(&tmp, out);
    }

    /// Width pass: `tmp[c][r][x]` for the input rows in `row_span` and the crop columns x.
    /// Rows go in blocks of ROWS, transposed so that one tap of one output column is a
    /// contiguous ROWS-lane fused multiply-add (the same weight for every row). Each value
    /// keeps the reference's accumulation order: first tap product, then fused multiply-adds.
    #[inline(always)]
    fn width_pass(&self, src: &Source, tmp: &mut [f32]) {
        let n_rows = self.row_span.len();
        let n_cols = self.col_span.len();
        let mut block = vec![0f32; 3 * n_cols * ROWS]; // [c][col][row]
        for r0 in (0..n_rows).step_by(ROWS) {
            let rows = ROWS.min(n_rows - r0);
            self.load_block(src, r0, rows, &mut block);
            for c in 0..3 {
                let plane = &block[c * n_cols * ROWS..(c + 1) * n_cols * ROWS];
                self.store_columns(plane, 0..self.geometry.crop_width, c, r0, rows, tmp);
            }
        }
    }

    /// The crop columns `xs` of channel `c` for the block's `rows` rows from `r0`, one value
    /// at a time into `tmp`.
    #[inline(always)]
    fn store_columns(
        &self,
        plane: &[f32],
        xs: std::ops::Range<usize>,
        c: usize,
        r0: usize,
        rows: usize,
        tmp: &mut [f32],
    ) {
        let (cw, n_rows) = (self.geometry.crop_width, self.row_span.len());
        for x in xs {
            let acc = self.column_taps(plane, x);
            for (r, &a) in acc.iter().enumerate().take(rows) {
                tmp[(c * n_rows + r0 + r) * cw + x] = a;
            }
        }
    }

    /// The block of input rows `r0..r0 + rows` of the row span, as [`fill_block`] lays it out.
    #[inline(always)]
    fn load_block(&self, src: &Source, r0: usize, rows: usize, block: &mut [f32]) {
        let (first, n_cols) = (self.block_start(src, r0), self.col_span.len());
        if rows == ROWS {
            fill_block(src.data, first, src.stride, n_cols, block);
        } else {
            fill_block_rows(src.data, first, src.stride, n_cols, rows, block);
        }
    }

    /// Byte offset in `src` of the block's first pixel: row `r0` of the row span, first
    /// column of the column span.
    fn block_start(&self, src: &Source, r0: usize) -> usize {
        (self.row_span.start - src.top + r0) * src.stride + (self.col_span.start - src.left) * 3
    }

    /// Crop column `x` of one channel's block, for its ROWS rows: the first tap's product,
    /// then one fused multiply-add per further tap.
    #[inline(always)]
    fn column_taps(&self, plane: &[f32], x: usize) -> [f32; ROWS] {
        let col_lo = self.col_span.start;
        let (s, w) = self.cols.taps_of(x);
        let lanes = &plane[(s - col_lo) * ROWS..(s - col_lo + w.len()) * ROWS];
        let mut acc = [0f32; ROWS];
        let mut taps = lanes.chunks_exact(ROWS).zip(w);
        if let Some((first, &w0)) = taps.next() {
            for (a, &v) in acc.iter_mut().zip(first) {
                *a = v * w0;
            }
        }
        for (lane, &wj) in taps {
            for (a, &v) in acc.iter_mut().zip(lane) {
                *a = v.mul_add(wj, *a);
            }
        }
        acc
    }

    /// Height pass, vectorized across columns (each output pixel keeps its own accumulation
    /// order: first tap product, then fused multiply-adds), rounded half to even.
    #[inline(always)]
    fn height_pass(&self, tmp: &[f32], out: &mut [u8]) {
        self.height_pass_columns(tmp, out, 0..self.geometry.crop_width);
    }

    /// [`Self::height_pass`] for the crop columns `xs` only (the AVX2 pass leaves it the
    /// columns past its last group of 32).
    #[inline(always)]
    fn height_pass_columns(&self, tmp: &[f32], out: &mut [u8], xs: std::ops::Range<usize>) {
        let g = self.geometry;
        let (cw, ch) = (g.crop_width, g.crop_height);
        let span = self.row_span.clone();
        let n_rows = span.len();
        let mut acc = vec![0f32; xs.len()];
        for c in 0..3 {
            let plane = &tmp[c * n_rows * cw..(c + 1) * n_rows * cw];
            let row = |r: usize| &plane[r * cw + xs.start..r * cw + xs.end];
            for y in 0..ch {
                let (s, w) = self.rows.taps_of(y);
                let s = s - span.start;
                for (a, &v) in acc.iter_mut().zip(row(s)) {
                    *a = v * w[0];
                }
                for (j, &wj) in w.iter().enumerate().skip(1) {
                    for (a, &v) in acc.iter_mut().zip(row(s + j)) {
                        *a = v.mul_add(wj, *a);
                    }
                }
                let at = (c * ch + y) * cw;
                let dst = &mut out[at + xs.start..at + xs.end];
                for (d, &a) in dst.iter_mut().zip(&acc) {
                    *d = a.round_ties_even().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
}

/// The pixels a resize reads: RGB24 rows of `stride` bytes whose first pixel is at
/// `(top, left)` of the whole picture.
struct Source<'a> {
    data: &'a [u8],
    stride: usize,
    top: usize,
    left: usize,
}

/// Rows of [`Resizer`]'s width-pass block (the lanes of its fused multiply-adds).
const ROWS: usize = 8;

/// Fill the width-pass block `[c][col][row]` (f32) from `rows` RGB24 rows of `n_cols` pixels
/// starting at byte `first`, one value at a time. Used for the last, partial block of rows, and
/// as the plain statement of what [`fill_block`] computes.
#[inline(always)]
fn fill_block_rows(
    rgb: &[u8],
    first: usize,
    stride: usize,
    n_cols: usize,
    rows: usize,
    block: &mut [f32],
) {
    for r in 0..rows {
        let row = &rgb[first + r * stride..first + r * stride + n_cols * 3];
        for (i, px) in row.chunks_exact(3).enumerate() {
            for c in 0..3 {
                block[(c * n_cols + i) * ROWS + r] = px[c] as f32;
            }
        }
    }
}

/// [`fill_block_rows`] for a full block of 8 rows, transposing 8 x 8 bytes at a time in
/// 64-bit registers: each output (one channel of one pixel, 8 rows) is then one contiguous
/// 8-lane store instead of 8 scattered ones. The scatter was most of the resize's time.
#[inline(always)]
fn fill_block(rgb: &[u8], first: usize, stride: usize, n_cols: usize, block: &mut [f32]) {
    let n_bytes = n_cols * 3;
    let row_at = |r: usize| &rgb[first + r * stride..first + r * stride + n_bytes];
    let rows: [&[u8]; ROWS] = std::array::from_fn(row_at);
    let block = &mut block[..3 * n_cols * ROWS];
    // 24 bytes = 8 pixels of one row per step: three 8 x 8 byte transposes.
    let mut b = 0;
    while b + 24 <= n_bytes {
        for part in 0..3 {
            let o = b + 8 * part;
            let mut m: [u64; ROWS] = std::array::from_fn(|r| {
                u64::from_le_bytes(rows[r][o..o + 8].try_into().expect("8 bytes"))
            });
            transpose_8x8_bytes(&mut m);
            for (k, word) in m.iter().enumerate() {
                // b is a multiple of 3, so the pixel and channel of byte b + q follow from q.
                let q = 8 * part + k;
                let (i, c) = (b / 3 + q / 3, q % 3);
                let lanes = word.to_le_bytes();
                let dst = &mut block[(c * n_cols + i) * ROWS..(c * n_cols + i + 1) * ROWS];
                for (d, &v) in dst.iter_mut().zip(&lanes) {
                    *d = v as f32;
                }
            }
        }
        b += 24;
    }
    for pos in b..n_bytes {
        let (i, c) = (pos / 3, pos % 3);
        for (r, row) in rows.iter().enumerate() {
            block[(c * n_cols + i) * ROWS + r] = row[pos] as f32;
        }
    }
}

/// Transpose an 8 x 8 byte matrix held as 8 little-endian words (`m[r]` byte `j` is element
/// (r, j)): afterwards `m[j]` byte `r` is the old element (r, j). Swaps 4 x 4, then 2 x 2,
/// then 1 x 1 blocks.
#[inline(always)]
fn transpose_8x8_bytes(m: &mut [u64; 8]) {
    const SWAPS: [(usize, u32, u64); 3] = [
        (4, 32, 0x0000_0000_FFFF_FFFF),
        (2, 16, 0x0000_FFFF_0000_FFFF),
        (1, 8, 0x00FF_00FF_00FF_00FF),
    ];
    for (d, shift, keep) in SWAPS {
        for r in 0..8 {
            if r & d == 0 {
                let (a, b) = (m[r], m[r + d]);
                m[r] = (a & keep) | ((b << shift) & !keep);
                m[r + d] = (b & !keep) | ((a >> shift) & keep);
            }
        }
    }
}

/// Resize only (no crop), for tests that compare the full resized frame with the golden.
pub fn resize_full(rgb: &[u8], height: usize, width: usize, out_h: usize, out_w: usize) -> Vec<u8> {
    let g = Geometry {
        in_height: height,
        in_width: width,
        resized_height: out_h,
        resized_width: out_w,
        top: 0,
        left: 0,
        crop_height: out_h,
        crop_width: out_w,
    };
    let mut out = vec![0u8; 3 * out_h * out_w];
    Resizer::new(g).resize_crop(rgb, width * 3, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_geometry() {
        let cfg = ProcessorConfig::for_crop(256);
        assert_eq!(cfg.shortest_edge, 292);
        let g = cfg.geometry(1080, 1920);
        assert_eq!((g.resized_height, g.resized_width), (292, 519));
        assert_eq!((g.top, g.left), (18, 131));
        // Portrait keeps the short side on the width.
        let g = cfg.geometry(1920, 1080);
        assert_eq!((g.resized_height, g.resized_width), (519, 292));
    }

    /// The tiny fixture's 5:4 frame: crop offsets truncate (13), they do not round (14).
    #[test]
    fn tiny_geometry_truncates_crop_offsets() {
        let cfg = ProcessorConfig::for_crop(64);
        assert_eq!(cfg.shortest_edge, 73);
        let g = cfg.geometry(256, 320);
        assert_eq!(
            (g.resized_height, g.resized_width, g.top, g.left),
            (73, 91, 4, 13)
        );
    }

    /// Weights of each output pixel sum to one and cover the expected support.
    #[test]
    fn weights_are_normalized() {
        for (i, o) in [(1080, 292), (320, 91), (100, 292), (7, 7)] {
            let w = AxisWeights::new(i, o, 0..o);
            for k in 0..o {
                let (_, ws) = w.taps_of(k);
                let s: f32 = ws.iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "{i}->{o} output {k}: sum {s}");
            }
        }
    }

    /// The transposing block fill writes exactly what the value-by-value fill writes.
    /// `n` pseudo-random bytes from a 64-bit LCG, advancing `seed`.
    fn random_bytes(n: usize, seed: &mut u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (*seed >> 56) as u8
            })
            .collect()
    }

    /// The AVX2 path equals the plain one bit for bit: a full-HD frame cropped to the released
    /// 256 (a multiple of 32 columns) and to 250 (partial column groups), with a partial last
    /// block of rows; a 4K frame (twice the taps); and small frames that are upscaled (fewer
    /// taps than rows), in portrait and landscape. Each size runs twice, so that the reused
    /// per-thread scratch of a bigger frame is seen by a smaller one.
    #[test]
    fn fast_path_equals_plain_path() {
        for (h, w, crops) in [
            (1083, 1921, &[256, 250][..]),
            (2160, 3840, &[256][..]),
            (120, 160, &[256, 64][..]),
            (333, 187, &[224][..]),
            (1083, 1921, &[256][..]),
        ] {
            let rgb = random_bytes(h * w * 3, &mut 99);
            for &crop in crops {
                let rs = Resizer::new(ProcessorConfig::for_crop(crop).geometry(h, w));
                let mut fast = vec![0u8; 3 * crop * crop];
                let mut plain = fast.clone();
                rs.resize_crop(&rgb, w * 3, &mut fast);
                let src = Source {
                    data: &rgb,
                    stride: w * 3,
                    top: 0,
                    left: 0,
                };
                rs.resize_crop_generic(&src, &mut plain);
                assert_eq!(fast, plain, "{h}x{w} crop {crop}");
            }
        }
    }

    /// Resizing from a part of the frame that holds the rows and columns the resize reads
    /// gives the same bytes as resizing from the whole frame; a part that starts too late is
    /// refused.
    #[test]
    fn resizing_a_frame_part_equals_resizing_the_frame() {
        let (h, w) = (1080, 1920);
        let rgb = random_bytes(h * w * 3, &mut 7);
        let rs = Resizer::new(ProcessorConfig::for_crop(256).geometry(h, w));
        let (rows, cols) = (rs.source_rows(), rs.source_cols());
        assert!(
            rows.len() < h && cols.len() < w / 2 + 64,
            "{rows:?} {cols:?}"
        );
        let mut whole = vec![0u8; 3 * 256 * 256];
        rs.resize_crop(&rgb, w * 3, &mut whole);
        for (top, left, right) in [
            (rows.start, cols.start, cols.end),
            (rows.start - 3, cols.start - 5, cols.end + 11),
        ] {
            let stride = 3 * (right - left) + 7;
            let mut part = vec![0u8; stride * (h - top)];
            for y in top..h {
                let at = (y - top) * stride;
                part[at..at + 3 * (right - left)]
                    .copy_from_slice(&rgb[y * w * 3 + 3 * left..y * w * 3 + 3 * right]);
            }
            let mut got = vec![0u8; 3 * 256 * 256];
            rs.resize_crop_part(&part, stride, (top, left), &mut got);
            assert_eq!(got, whole, "part from ({top}, {left})");
        }
        let late = std::panic::catch_unwind(|| {
            let mut out = vec![0u8; 3 * 256 * 256];
            rs.resize_crop_part(&rgb, w * 3, (rows.start + 1, 0), &mut out);
        });
        assert!(late.is_err());
    }

    #[test]
    fn block_fill_matches_plain_fill() {
        let mut m: [u64; 8] =
            std::array::from_fn(|r| u64::from_le_bytes(std::array::from_fn(|j| (r * 8 + j) as u8)));
        transpose_8x8_bytes(&mut m);
        for (j, w) in m.iter().enumerate() {
            for (r, &v) in w.to_le_bytes().iter().enumerate() {
                assert_eq!(v as usize, r * 8 + j);
            }
        }
        let mut seed = 12345u64;
        for (n_cols, stride) in [(1, 5), (7, 30), (8, 24), (9, 40), (101, 333)] {
            let rgb = random_bytes(8 * stride + 3 * n_cols, &mut seed);
            let first = 2;
            let mut want = vec![-1f32; 3 * n_cols * ROWS];
            let mut got = want.clone();
            fill_block_rows(&rgb, first, stride, n_cols, ROWS, &mut want);
            fill_block(&rgb, first, stride, n_cols, &mut got);
            assert_eq!(want, got, "{n_cols} columns");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut got = vec![-1f32; 3 * n_cols * ROWS];
                // SAFETY: AVX2 is available, checked just above.
                unsafe { avx2::fill_block_avx2(&rgb, first, stride, n_cols, &mut got) };
                assert_eq!(want, got, "{n_cols} columns (AVX2)");
            }
        }
    }

    /// Same size in and out is the identity, and a constant image stays constant.
    #[test]
    fn identity_and_constant() {
        let (h, w) = (5, 7);
        let img: Vec<u8> = (0..h * w * 3).map(|i| (i * 37 % 256) as u8).collect();
        let out = resize_full(&img, h, w, h, w);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    assert_eq!(out[(c * h + y) * w + x], img[(y * w + x) * 3 + c]);
                }
            }
        }
        let flat = vec![200u8; 64 * 48 * 3];
        assert!(resize_full(&flat, 48, 64, 13, 17).iter().all(|&v| v == 200));
    }
}
