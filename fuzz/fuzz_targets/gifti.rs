//! The GIFTI reader must return Ok or a typed error on any input, never panic or blow up memory.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // No external-file directory: in-memory input may not reach the file system.
    if let Ok(img) = tribe_bids::formats::read_gifti_bytes(data, Path::new("fuzz.gii"), None) {
        // Whatever parsed must be consistent: every array holds exactly what its dims promise.
        for a in &img.arrays {
            assert_eq!(a.expected_len(), Some(a.data.len()));
        }
        let _ = img.time_series_f32(Path::new("fuzz.gii"));
    }
});
