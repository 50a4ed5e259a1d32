//! The fsaverage5 surfaces the report draws on, compiled into the binary.
//!
//! Why embedded: the figures must render wherever the binary runs (a container, an HPC node,
//! a `cargo install`), with no asset path to configure. The six files (pial, inflated and sulcal
//! depth per hemisphere, from nilearn's fsaverage5 in `assets/fsaverage5`) add about 0.9 MB.

use super::mesh::{HemiSurface, Mesh};
use crate::formats::gifti::{GiftiImage, read_gifti_bytes};
use crate::{Error, Result};
use std::path::Path;

/// Vertices per hemisphere of fsaverage5.
pub const N_VERTICES: usize = 10242;

struct Files {
    pial: &'static [u8],
    infl: &'static [u8],
    sulc: &'static [u8],
}

const LEFT: Files = Files {
    pial: include_bytes!("../../assets/fsaverage5/pial_left.gii.gz"),
    infl: include_bytes!("../../assets/fsaverage5/infl_left.gii.gz"),
    sulc: include_bytes!("../../assets/fsaverage5/sulc_left.gii.gz"),
};
const RIGHT: Files = Files {
    pial: include_bytes!("../../assets/fsaverage5/pial_right.gii.gz"),
    infl: include_bytes!("../../assets/fsaverage5/infl_right.gii.gz"),
    sulc: include_bytes!("../../assets/fsaverage5/sulc_right.gii.gz"),
};

/// How far towards the inflated surface the drawn surface goes (0 = pial, 1 = inflated).
/// TRIBE's own plots use 0.5 (SPEC §12, `inflate="half"`).
pub const DEFAULT_INFLATION: f32 = 0.5;

fn decode(bytes: &[u8], name: &str) -> Result<GiftiImage> {
    read_gifti_bytes(bytes, Path::new(name), None)
}

fn mesh(bytes: &[u8], name: &str) -> Result<Mesh> {
    let img = decode(bytes, name)?;
    let bad = |m: &str| Error::Gifti {
        path: name.into(),
        message: m.into(),
    };
    let coords = img
        .arrays
        .first()
        .and_then(|a| a.data.as_f32())
        .ok_or_else(|| bad("no float32 POINTSET array"))?;
    let tris: Vec<u32> = img
        .arrays
        .get(1)
        .and_then(|a| a.data.as_i32())
        .ok_or_else(|| bad("no int32 TRIANGLE array"))?
        .iter()
        .map(|&i| i as u32)
        .collect();
    Mesh::from_arrays(coords, &tris)
}

fn hemi(f: &Files, side: &str, inflation: f32) -> Result<HemiSurface> {
    let pial = mesh(f.pial, &format!("fsaverage5/pial_{side}.gii.gz"))?;
    let infl = mesh(f.infl, &format!("fsaverage5/infl_{side}.gii.gz"))?;
    let sulc_name = format!("fsaverage5/sulc_{side}.gii.gz");
    let sulc = decode(f.sulc, &sulc_name)?
        .arrays
        .first()
        .and_then(|a| a.data.as_f32())
        .map(<[f32]>::to_vec)
        .ok_or_else(|| Error::Gifti {
            path: sulc_name.into(),
            message: "no float32 array".into(),
        })?;
    Ok(HemiSurface {
        mesh: pial.blend(&infl, inflation)?,
        sulc,
    })
}

/// Left and right fsaverage5 hemispheres, `inflation` of the way from pial to inflated.
pub fn load(inflation: f32) -> Result<(HemiSurface, HemiSurface)> {
    let (l, r) = rayon::join(
        || hemi(&LEFT, "left", inflation),
        || hemi(&RIGHT, "right", inflation),
    );
    Ok((l?, r?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_surfaces_decode() {
        let (l, r) = load(DEFAULT_INFLATION).unwrap();
        for h in [&l, &r] {
            assert_eq!(h.mesh.vertices.len(), N_VERTICES);
            assert_eq!(h.mesh.triangles.len(), 20480);
            assert_eq!(h.sulc.len(), N_VERTICES);
        }
        // left hemisphere lies at negative x, right at positive x
        assert!(l.mesh.centroid()[0] < 0.0 && r.mesh.centroid()[0] > 0.0);
    }
}
