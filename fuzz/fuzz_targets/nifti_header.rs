//! The NIfTI-1/2 header parser and the affine code must never panic, whatever the bytes.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = tribe_bids::formats::nifti::parse_nifti_header(data, Path::new("fuzz.nii")) {
        let _ = h.shape();
        let _ = h.zooms();
        let _ = h.data_bytes();
        let _ = h.repetition_time_s();
        let _ = h.qform_affine();
        let _ = h.affine();
        let _ = (h.space_unit(), h.time_unit());
    }
});
