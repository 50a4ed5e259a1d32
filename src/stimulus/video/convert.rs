//! From decoded pictures to the RGB24 bytes the reference reads.
//!
//! Conversion goes through the same libavfilter chain the reference's CLI builds
//! (autorotation filters, then `scale=W:H` with `flags=bicubic`, then `format=rgb24`), so the
//! RGB bytes are identical to what moviepy reads from the pipe, including the YUV matrix and
//! range the scale filter picks from the frame's colour tags.
//!
//! A caller that reads only part of the picture (the V-JEPA2 processor's centre crop reads
//! about half of a 16:9 frame) can ask for that [`Region`] alone. The graph then crops before
//! the conversion, which for the common formats (libswscale's unscaled YUV to RGB converters)
//! computes each RGB pixel from its own luma and chroma samples only, so the region's bytes are
//! the full conversion's bytes. That is checked, not assumed: before the first frame is
//! converted, one frame of noise in the stream's exact format and colour tags goes through
//! both the full and the cropped chain, and any difference falls back to converting the whole
//! picture.
//!
//! The converter is separate from the decoder so that the two can run on different threads:
//! decoded pictures ([`DecodedFrame`]) are reference-counted FFmpeg buffers that move between
//! threads without a copy.

use ffmpeg_next as ffmpeg;

use super::probe::{VideoInfo, media_err};
use crate::error::{Error, MediaErrorKind, Result};

/// A rectangle of the upright picture: rows `top..top + height`, columns `left..left + width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

impl Region {
    /// The smallest region with corners on multiples of 4 (so that chroma planes of every
    /// subsampled format crop exactly) and width a multiple of 16 where the picture allows
    /// (SIMD converters work in groups of 8 or 16 pixels) that holds `rows` x `cols` of a
    /// `height` x `width` picture.
    pub fn covering(
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        height: usize,
        width: usize,
    ) -> Self {
        let top = rows.start.min(height) / 4 * 4;
        let left = cols.start.min(width) / 4 * 4;
        let bottom = rows.end.next_multiple_of(4).min(height).max(top);
        let right = (left + (cols.end.max(left) - left).next_multiple_of(16))
            .min(width)
            .max(left);
        Self {
            top,
            left,
            height: bottom - top,
            width: right - left,
        }
    }

    /// The whole `height` x `width` picture.
    pub fn whole(height: usize, width: usize) -> Self {
        Self {
            top: 0,
            left: 0,
            height,
            width,
        }
    }

    pub(crate) fn is_whole(&self, height: usize, width: usize) -> bool {
        (self.top, self.left, self.height, self.width) == (0, 0, height, width)
    }
}

/// An RGB24 picture, or a [`Region`] of one, borrowed from the decoder (rows of `stride`
/// bytes). `top` and `left` place its first pixel in the whole picture.
#[derive(Debug, Clone, Copy)]
pub struct RgbView<'a> {
    pub width: usize,
    pub height: usize,
    pub stride: usize,
    pub top: usize,
    pub left: usize,
    pub data: &'a [u8],
}

/// A converted frame taken out of the decoder, so that it can be used on another thread
/// while the decoder goes on (its pixels are reference-counted FFmpeg buffers, not copied).
pub struct RgbFrame {
    frame: ffmpeg::frame::Video,
    top: usize,
    left: usize,
}

impl RgbFrame {
    pub fn view(&self) -> RgbView<'_> {
        RgbView {
            width: self.frame.width() as usize,
            height: self.frame.height() as usize,
            stride: self.frame.stride(0),
            top: self.top,
            left: self.left,
            data: self.frame.data(0),
        }
    }
}

impl RgbView<'_> {
    /// Copy into a tightly packed HWC buffer.
    pub fn to_packed(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.width * self.height * 3);
        for y in 0..self.height {
            out.extend_from_slice(&self.data[y * self.stride..y * self.stride + self.width * 3]);
        }
        out
    }
}

/// A decoded picture taken out of the decoder ([`super::FrameDecoder::take_frame`]).
pub struct DecodedFrame(pub(crate) ffmpeg::frame::Video);

/// Converts one stream's decoded pictures to RGB24 (see the module docs).
pub struct RgbConverter<'a> {
    info: &'a VideoInfo,
    rgb: ffmpeg::frame::Video,
    graph: Option<(ffmpeg::filter::Graph, (u32, u32, i32))>,
    /// What the caller reads ([`Self::set_region`]); `None`: the whole picture.
    wanted_region: Option<Region>,
    /// What the conversion graph produces, settled when it is built.
    region: Option<Region>,
}

impl<'a> RgbConverter<'a> {
    pub fn new(info: &'a VideoInfo) -> Self {
        Self {
            info,
            rgb: ffmpeg::frame::Video::empty(),
            graph: None,
            wanted_region: None,
            region: None,
        }
    }

    /// Convert only `region` of each frame from now on (see the module docs); frames then
    /// come out as that region, or as the whole picture where cropping before the conversion
    /// would change a pixel. Call before the first conversion.
    pub fn set_region(&mut self, region: Region) {
        if self.graph.is_none() {
            self.wanted_region = Some(region);
        }
    }

    /// Convert `frame`, borrowing the result (the frame's buffers go to the graph).
    pub(crate) fn view(&mut self, frame: &ffmpeg::frame::Video) -> Result<RgbView<'_>> {
        let region = self.convert_into_rgb(frame)?;
        Ok(RgbView {
            width: region.width,
            height: region.height,
            stride: self.rgb.stride(0),
            top: region.top,
            left: region.left,
            data: self.rgb.data(0),
        })
    }

    /// Convert a decoded picture into an owned RGB frame.
    pub fn convert(&mut self, frame: DecodedFrame) -> Result<RgbFrame> {
        self.convert_frame(&frame.0)
    }

    pub(crate) fn convert_frame(&mut self, frame: &ffmpeg::frame::Video) -> Result<RgbFrame> {
        let region = self.convert_into_rgb(frame)?;
        Ok(RgbFrame {
            frame: std::mem::replace(&mut self.rgb, ffmpeg::frame::Video::empty()),
            top: region.top,
            left: region.left,
        })
    }

    /// Convert `frame` into `self.rgb`; returns the region it holds. The graph takes the
    /// frame's buffers, leaving `frame` empty.
    fn convert_into_rgb(&mut self, frame: &ffmpeg::frame::Video) -> Result<Region> {
        let key = (
            frame.width(),
            frame.height(),
            ffmpeg::ffi::AVPixelFormat::from(frame.format()) as i32,
        );
        if self.graph.as_ref().map(|g| g.1) != Some(key) {
            if self.graph.is_some() {
                return Err(media_err(
                    &self.info.path,
                    MediaErrorKind::Unsupported,
                    "the picture size or pixel format changes inside the stream; re-encode it at one size",
                ));
            }
            let whole = Region::whole(self.info.height, self.info.width);
            let region = match self.wanted_region {
                Some(r) if !r.is_whole(self.info.height, self.info.width) => {
                    if self.region_is_exact(frame, r)? {
                        r
                    } else {
                        tracing::debug!(
                            "{}: cropping before the RGB conversion would change pixels; converting whole frames",
                            self.info.path.display()
                        );
                        whole
                    }
                }
                _ => whole,
            };
            self.graph = Some((self.build_graph(frame, region)?, key));
            self.region = Some(region);
        }
        let region = self.region.expect("set with the graph");
        let (graph, _) = self.graph.as_mut().expect("graph built above");
        run_graph(graph, frame, &mut self.rgb).map_err(|e| self.conversion_err(e))?;
        let (w, h) = (self.rgb.width() as usize, self.rgb.height() as usize);
        if (w, h) != (region.width, region.height) {
            return Err(Error::Other(format!(
                "{}: RGB frame is {w}x{h}, expected {}x{}",
                self.info.path.display(),
                region.width,
                region.height
            )));
        }
        Ok(region)
    }

    fn conversion_err(&self, e: ffmpeg::Error) -> Error {
        media_err(
            &self.info.path,
            MediaErrorKind::Unsupported,
            format!("RGB conversion failed: {e}"),
        )
    }

    /// Whether converting only `region` gives exactly the full conversion's bytes there, for
    /// frames like `frame`: a frame of noise with its format, size and colour tags
    /// goes through both graphs. Conversions are deterministic and content-blind, so a
    /// converter that mixed pixels across the region's edge would show it on noise.
    fn region_is_exact(&self, frame: &ffmpeg::frame::Video, region: Region) -> Result<bool> {
        let mut noise = ffmpeg::frame::Video::new(frame.format(), frame.width(), frame.height());
        // SAFETY: both frames are valid; only properties (colour tags, aspect) are copied.
        unsafe {
            ffmpeg::ffi::av_frame_copy_props(noise.as_mut_ptr(), frame.as_ptr());
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for p in 0..noise.planes() {
            for b in noise.data_mut(p).iter_mut() {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                *b = (state >> 56) as u8;
            }
        }
        let whole = Region::whole(self.info.height, self.info.width);
        let (mut full, mut part) = (ffmpeg::frame::Video::empty(), ffmpeg::frame::Video::empty());
        // The buffer source takes the frame's buffers, so each graph gets its own copy.
        run_graph(
            &mut self.build_graph(frame, whole)?,
            &noise.clone(),
            &mut full,
        )
        .map_err(|e| self.conversion_err(e))?;
        run_graph(&mut self.build_graph(frame, region)?, &noise, &mut part)
            .map_err(|e| self.conversion_err(e))?;
        if (part.width() as usize, part.height() as usize) != (region.width, region.height) {
            return Ok(false);
        }
        let row_bytes = 3 * region.width;
        Ok((0..region.height).all(|y| {
            let f = (region.top + y) * full.stride(0) + 3 * region.left;
            let c = y * part.stride(0);
            full.data(0)[f..f + row_bytes] == part.data(0)[c..c + row_bytes]
        }))
    }

    /// The reference's conversion chain, cropped to `region` (right after autorotation, so
    /// in upright coordinates) unless that is the whole picture.
    fn build_graph(
        &self,
        frame: &ffmpeg::frame::Video,
        region: Region,
    ) -> Result<ffmpeg::filter::Graph> {
        let fail = |e: ffmpeg::Error| {
            media_err(
                &self.info.path,
                MediaErrorKind::Unsupported,
                format!("cannot build the RGB conversion: {e}"),
            )
        };
        let mut graph = ffmpeg::filter::Graph::new();
        let tb = self.info.time_base;
        let sar = frame.aspect_ratio();
        let (sn, sd) = if sar.numerator() > 0 && sar.denominator() > 0 {
            (sar.numerator(), sar.denominator())
        } else {
            (0, 1)
        };
        let fr = self.info.output_rate;
        let args = format!(
            "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect={sn}/{sd}:frame_rate={}/{}",
            frame.width(),
            frame.height(),
            ffmpeg::ffi::AVPixelFormat::from(frame.format()) as i32,
            tb.num,
            tb.den,
            fr.num,
            fr.den
        );
        graph
            .add(
                &ffmpeg::filter::find("buffer").expect("libavfilter has buffer"),
                "in",
                &args,
            )
            .map_err(fail)?;
        graph
            .add(
                &ffmpeg::filter::find("buffersink").expect("libavfilter has buffersink"),
                "out",
                "",
            )
            .map_err(fail)?;
        let crop = if region.is_whole(self.info.height, self.info.width) {
            String::new()
        } else {
            format!(
                "crop={}:{}:{}:{}:exact=1,",
                region.width, region.height, region.left, region.top
            )
        };
        let spec = format!(
            "{}{crop}scale={}:{}:flags=bicubic,format=rgb24",
            self.info.rotation.filters(),
            region.width,
            region.height
        );
        graph
            .output("in", 0)
            .and_then(|p| p.input("out", 0))
            .and_then(|p| p.parse(&spec))
            .map_err(fail)?;
        graph.validate().map_err(fail)?;
        Ok(graph)
    }
}

/// Push `frame` through a conversion graph into `out`. The graph takes `frame`'s buffers
/// (FFmpeg's `av_buffersrc_add_frame`), leaving it empty.
fn run_graph(
    graph: &mut ffmpeg::filter::Graph,
    frame: &ffmpeg::frame::Video,
    out: &mut ffmpeg::frame::Video,
) -> std::result::Result<(), ffmpeg::Error> {
    graph
        .get("in")
        .expect("buffer source")
        .source()
        .add(frame)?;
    graph.get("out").expect("buffer sink").sink().frame(out)
}
