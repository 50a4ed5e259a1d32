//! Colour maps, defined from the same segment data matplotlib and nilearn use, so our figures
//! read like nilearn's: `cold_hot` (nilearn's default for signed statistical maps), `RdBu_r`
//! (ColorBrewer), `hot` (positive maps) and `Greys`.

/// A colour map over [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colormap {
    /// nilearn `cold_hot`: `hot` mirrored, blue-cyan-white below the midpoint, black at it.
    ColdHot,
    /// matplotlib `RdBu_r`: blue, white at the midpoint, red.
    RdBuR,
    /// matplotlib `hot`: black-red-yellow-white.
    Hot,
    /// matplotlib `gray`: black to white (carpet plots).
    Gray,
}

impl Colormap {
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "cold_hot" | "coldhot" => Some(Colormap::ColdHot),
            "rdbu_r" => Some(Colormap::RdBuR),
            "hot" => Some(Colormap::Hot),
            "gray" | "grey" => Some(Colormap::Gray),
            _ => None,
        }
    }

    /// Whether the map is meant for signed data centred on 0.
    pub fn is_diverging(self) -> bool {
        matches!(self, Colormap::ColdHot | Colormap::RdBuR)
    }

    /// RGB in [0, 1] at position `x` (clamped to [0, 1]).
    pub fn rgb(self, x: f32) -> [f32; 3] {
        let x = if x.is_nan() { 0.5 } else { x.clamp(0.0, 1.0) };
        match self {
            Colormap::Hot => hot(x),
            Colormap::ColdHot => {
                // nilearn _pigtailed_cmap(hot, swap_order=('green','red','blue')): the lower
                // half is hot reversed with red and blue swapped.
                let p = (2.0 * x - 1.0).abs();
                let h = hot(p);
                if x >= 0.5 { h } else { [h[2], h[1], h[0]] }
            }
            Colormap::RdBuR => {
                let t = (1.0 - x) * (RDBU.len() - 1) as f32;
                let i = (t.floor() as usize).min(RDBU.len() - 2);
                let f = t - i as f32;
                let (a, b) = (RDBU[i], RDBU[i + 1]);
                [
                    (a[0] + f * (b[0] - a[0])) / 255.0,
                    (a[1] + f * (b[1] - a[1])) / 255.0,
                    (a[2] + f * (b[2] - a[2])) / 255.0,
                ]
            }
            Colormap::Gray => [x, x, x],
        }
    }
}

/// matplotlib `hot` segment data.
fn hot(x: f32) -> [f32; 3] {
    const A: f32 = 0.365_079;
    const B: f32 = 0.746_032;
    let r = if x < A {
        0.0416 + (1.0 - 0.0416) * x / A
    } else {
        1.0
    };
    let g = if x < A {
        0.0
    } else if x < B {
        (x - A) / (B - A)
    } else {
        1.0
    };
    let b = if x < B { 0.0 } else { (x - B) / (1.0 - B) };
    [r, g, b]
}

/// ColorBrewer RdBu (11 classes), red end first; `RdBu_r` reads it backwards.
const RDBU: [[f32; 3]; 11] = [
    [103.0, 0.0, 31.0],
    [178.0, 24.0, 43.0],
    [214.0, 96.0, 77.0],
    [244.0, 165.0, 130.0],
    [253.0, 219.0, 199.0],
    [247.0, 247.0, 247.0],
    [209.0, 229.0, 240.0],
    [146.0, 197.0, 222.0],
    [67.0, 147.0, 195.0],
    [33.0, 102.0, 172.0],
    [5.0, 48.0, 97.0],
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(Colormap::Hot.rgb(1.0), [1.0, 1.0, 1.0]);
        assert_eq!(Colormap::ColdHot.rgb(1.0), [1.0, 1.0, 1.0]);
        assert_eq!(Colormap::ColdHot.rgb(0.0), [1.0, 1.0, 1.0]);
        // just above/below the midpoint: dark red vs dark blue
        let up = Colormap::ColdHot.rgb(0.6);
        let down = Colormap::ColdHot.rgb(0.4);
        assert!(up[0] > up[2] && down[2] > down[0]);
        let mid = Colormap::RdBuR.rgb(0.5);
        assert!((mid[0] - 247.0 / 255.0).abs() < 1e-6);
        assert!(Colormap::RdBuR.rgb(1.0)[0] > 0.3 && Colormap::RdBuR.rgb(0.0)[2] > 0.3);
    }
}
