//! Triangle meshes for the brain pictures.
//!
//! Deliberately independent of the GIFTI reader (`formats::gifti`): the renderer only needs
//! coordinates and triangles, so whoever loads the fsaverage5 files hands them over through
//! [`Mesh::from_arrays`]. Figures use the half-inflated surface as TRIBE's own plots do
//! (SPEC §12: 0.5 * inflated + 0.5 * pial), built with [`Mesh::blend`].

use crate::{Error, Result};

/// A triangle mesh: vertex coordinates (mm) and vertex-index triangles.
#[derive(Debug, Clone, PartialEq)]
pub struct Mesh {
    pub vertices: Vec<[f32; 3]>,
    pub triangles: Vec<[u32; 3]>,
}

/// One hemisphere as it will be drawn: display geometry and the sulcal depth that shades it.
#[derive(Debug, Clone, PartialEq)]
pub struct HemiSurface {
    pub mesh: Mesh,
    /// FreeSurfer `sulc` per vertex (positive = deep, in a sulcus).
    pub sulc: Vec<f32>,
}

impl Mesh {
    /// Build a mesh from flat arrays (`coords`: 3 per vertex, `triangles`: 3 per face), checking
    /// that every triangle index is in range.
    pub fn from_arrays(coords: &[f32], triangles: &[u32]) -> Result<Self> {
        if !coords.len().is_multiple_of(3) || !triangles.len().is_multiple_of(3) {
            return Err(Error::ShapeMismatch {
                name: "mesh arrays (coords, triangles)".into(),
                expected: vec![3, 3],
                found: vec![coords.len() % 3, triangles.len() % 3],
                path: None,
            });
        }
        let n = coords.len() / 3;
        if let Some(bad) = triangles.iter().find(|&&i| i as usize >= n) {
            return Err(Error::AnalysisInput {
                what: "mesh".into(),
                message: format!("triangle index {bad} is out of range for {n} vertices"),
                fix: "pass the pointset and triangle arrays of the same surface file".into(),
            });
        }
        if let Some(i) = coords.iter().position(|c| !c.is_finite()) {
            return Err(Error::AnalysisInput {
                what: "mesh".into(),
                message: format!("coordinate {} of vertex {} is not finite", i % 3, i / 3),
                fix: "check the surface file".into(),
            });
        }
        Ok(Mesh {
            vertices: coords.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
            triangles: triangles
                .chunks_exact(3)
                .map(|t| [t[0], t[1], t[2]])
                .collect(),
        })
    }

    /// `(1 - t) * self + t * other` vertex by vertex (same topology required). `t = 0.5` of
    /// pial and inflated is the half-inflated surface.
    pub fn blend(&self, other: &Mesh, t: f32) -> Result<Mesh> {
        if self.vertices.len() != other.vertices.len()
            || self.triangles.len() != other.triangles.len()
        {
            return Err(Error::ShapeMismatch {
                name: "meshes to blend".into(),
                expected: vec![self.vertices.len(), self.triangles.len()],
                found: vec![other.vertices.len(), other.triangles.len()],
                path: None,
            });
        }
        Ok(Mesh {
            vertices: self
                .vertices
                .iter()
                .zip(&other.vertices)
                .map(|(a, b)| {
                    [
                        a[0] + t * (b[0] - a[0]),
                        a[1] + t * (b[1] - a[1]),
                        a[2] + t * (b[2] - a[2]),
                    ]
                })
                .collect(),
            triangles: self.triangles.clone(),
        })
    }

    /// Area-weighted vertex normals, oriented outwards (away from the centroid on average),
    /// whatever the file's winding.
    pub fn vertex_normals(&self) -> Vec<[f32; 3]> {
        let mut n = vec![[0.0f32; 3]; self.vertices.len()];
        for t in &self.triangles {
            let [a, b, c] = t.map(|i| self.vertices[i as usize]);
            let u = sub(b, a);
            let v = sub(c, a);
            let f = cross(u, v);
            for &i in t {
                let ni = &mut n[i as usize];
                ni[0] += f[0];
                ni[1] += f[1];
                ni[2] += f[2];
            }
        }
        let c = self.centroid();
        let outward: f32 = self
            .vertices
            .iter()
            .zip(&n)
            .map(|(p, ni)| dot(sub(*p, c), *ni))
            .sum();
        let sign = if outward < 0.0 { -1.0 } else { 1.0 };
        for ni in &mut n {
            let l = dot(*ni, *ni).sqrt();
            if l > 0.0 {
                *ni = [sign * ni[0] / l, sign * ni[1] / l, sign * ni[2] / l];
            }
        }
        n
    }

    pub fn centroid(&self) -> [f32; 3] {
        let n = self.vertices.len().max(1) as f32;
        let s = self
            .vertices
            .iter()
            .fold([0.0f32; 3], |a, v| [a[0] + v[0], a[1] + v[1], a[2] + v[2]]);
        [s[0] / n, s[1] / n, s[2] / n]
    }
}

pub(crate) fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub(crate) fn cross(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub(crate) fn dot(a: [f32; 3], b: [f32; 3]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_indices_and_blends() {
        assert!(Mesh::from_arrays(&[0.0; 9], &[0, 1, 3]).is_err());
        let a =
            Mesh::from_arrays(&[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0], &[0, 1, 2]).unwrap();
        let b =
            Mesh::from_arrays(&[2.0, 0.0, 0.0, 3.0, 0.0, 0.0, 2.0, 1.0, 0.0], &[0, 1, 2]).unwrap();
        assert_eq!(a.blend(&b, 0.5).unwrap().vertices[0], [1.0, 0.0, 0.0]);
    }
}
