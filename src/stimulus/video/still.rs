//! Still images shown as video (png, jpg, bmp): one RGB frame held for the event's duration.
//!
//! Decoded like the reference's image events (PIL `open().convert("RGB")`): alpha is dropped,
//! not blended, grey becomes three equal channels, and EXIF orientation is ignored.

use std::path::{Path, PathBuf};

use crate::error::{Error, MediaErrorKind, Result};

/// A decoded still image, tightly packed RGB24 (HWC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StillImage {
    pub path: PathBuf,
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// File extensions read as still images.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

/// True when the path names an image we read as a still frame.
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

impl StillImage {
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::InputMissing {
                path: path.to_path_buf(),
                what: "the image file".into(),
                fix: "check the path (stim_file is relative to BIDS_DIR/stimuli)".into(),
            });
        }
        let media = |kind, message: String| Error::Media {
            path: path.to_path_buf(),
            kind,
            message,
        };
        let reader = image::ImageReader::open(path)
            .map_err(|e| Error::io(path, e))?
            .with_guessed_format()
            .map_err(|e| Error::io(path, e))?;
        if reader.format().is_none() {
            return Err(media(
                MediaErrorKind::UnsupportedCodec,
                "not a png, jpeg or bmp image".into(),
            ));
        }
        let img = reader.decode().map_err(|e| match e {
            image::ImageError::Unsupported(u) => media(
                MediaErrorKind::UnsupportedCodec,
                format!("unsupported image: {u}"),
            ),
            other => media(
                MediaErrorKind::Unreadable,
                format!("cannot decode the image: {other}"),
            ),
        })?;
        let rgb = img.to_rgb8();
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        if w == 0 || h == 0 {
            return Err(media(
                MediaErrorKind::Empty,
                "the image has no pixels".into(),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            width: w,
            height: h,
            rgb: rgb.into_raw(),
        })
    }
}
