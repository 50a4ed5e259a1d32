//! The GIFTI reader must return Ok or a typed error on any input, never panic or blow up memory.
#![no_main]

use std::io::Read;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

/// A few KB of bzip2 can expand to gigabytes; a real whole-file-compressed GIFTI is trusted
/// input of known size, so only the harness bounds it (and skips what would exceed the bound).
fn decompressed_fits(data: &[u8]) -> bool {
    const LIMIT: u64 = 64 << 20;
    let mut sink = std::io::sink();
    let n = if data.starts_with(b"BZh") {
        std::io::copy(&mut bzip2::read::MultiBzDecoder::new(data).take(LIMIT + 1), &mut sink)
    } else if data.starts_with(&[0x1f, 0x8b]) {
        std::io::copy(&mut flate2::read::MultiGzDecoder::new(data).take(LIMIT + 1), &mut sink)
    } else {
        return true;
    };
    n.map_or(true, |n| n <= LIMIT)
}

fuzz_target!(|data: &[u8]| {
    if !decompressed_fits(data) {
        return;
    }
    // No external-file directory: in-memory input may not reach the file system.
    if let Ok(img) = tribe_bids::formats::read_gifti_bytes(data, Path::new("fuzz.gii"), None) {
        // Whatever parsed must be consistent: every array holds exactly what its dims promise.
        for a in &img.arrays {
            assert_eq!(a.expected_len(), Some(a.data.len()));
        }
        let _ = img.time_series_f32(Path::new("fuzz.gii"));
    }
});
