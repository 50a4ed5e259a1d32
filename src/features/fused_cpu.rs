//! Fused CPU kernels for a decoder layer's elementwise steps (f32).
//!
//! candle runs `silu(gate) * up` and the split of the fused q|k|v product into heads, with the
//! rotary embedding, as several passes. The passes over strided views (a `narrow` of the
//! fused gate|up product, a transpose of q, k and v) run on the calling thread alone. At 512
//! tokens they took about 4 % of a LLaMA-3.2-3B layer's CPU time, all of it on one thread
//! while the rest of the pool waited (`perf`, per thread, 2 cores). These kernels do the same
//! arithmetic in the same order, in one parallel pass each, so their results are bit for bit
//! candle's (the tests below compare them).

use rayon::prelude::*;

/// Rows handed to one rayon task: enough work per task to amortize the scheduling.
const ROWS_PER_TASK: usize = 16;

/// `silu(gate) * up` for the rows of a fused `gate|up` product `(rows, 2 f)`: out `(rows, f)`.
/// `silu(v) = v / (1 + exp(-v))`, as candle's (and PyTorch's) f32 kernel computes it.
pub fn silu_mul(gate_up: &[f32], f: usize) -> Vec<f32> {
    if f == 0 {
        return Vec::new();
    }
    assert_eq!(gate_up.len() % (2 * f), 0, "silu_mul: not (rows, 2 x {f})");
    let rows = gate_up.len() / (2 * f);
    let mut out: Vec<f32> = Vec::with_capacity(rows * f);
    out.spare_capacity_mut()
        .par_chunks_mut(f * ROWS_PER_TASK)
        .zip(gate_up.par_chunks(2 * f * ROWS_PER_TASK))
        .for_each(|(dst, src)| {
            for (d, s) in dst.chunks_mut(f).zip(src.chunks(2 * f)) {
                let (gate, up) = s.split_at(f);
                for ((o, &g), &u) in d.iter_mut().zip(gate).zip(up) {
                    o.write(g / (1.0 + (-g).exp()) * u);
                }
            }
        });
    // SAFETY: the chunks of `dst` cover all rows * f elements, each written once above.
    unsafe { out.set_len(rows * f) };
    out
}

/// The heads of a fused `q|k|v` product: `qkv (b * t, (heads + 2 kv_heads) * hd)` row-major,
/// with q's `heads` heads, then k's and v's `kv_heads` each.
#[derive(Debug, Clone, Copy)]
pub struct QkvShape {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Split `qkv` into head-major `q (b, heads, t, hd)`, `k (b, kv_heads, t, hd)` and
/// `v (b, kv_heads, t, hd)`, applying the rotary embedding to q and k on the way:
/// non-interleaved halves, `cos`/`sin` `(t, hd / 2)`, as `candle_nn::rotary_emb::rope`
/// computes it (`x1 cos - x2 sin`, `x1 sin + x2 cos`).
pub fn split_heads_rope(
    qkv: &[f32],
    shape: QkvShape,
    cos: &[f32],
    sin: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let QkvShape {
        batch: b,
        tokens: t,
        heads: h,
        kv_heads: kvh,
        head_dim: hd,
    } = shape;
    let width = (h + 2 * kvh) * hd;
    assert_eq!(
        qkv.len(),
        b * t * width,
        "split_heads_rope: qkv is not {shape:?}"
    );
    assert!(hd.is_multiple_of(2), "split_heads_rope: odd head dim {hd}");
    let half = hd / 2;
    assert!(
        cos.len() >= t * half && sin.len() >= t * half,
        "split_heads_rope: rope tables shorter than {t} x {half}"
    );
    // `n_heads` heads whose columns in qkv start at `first_col`, each a `t x hd` block per
    // batch row; one rayon task per (batch row, head).
    let head = |n_heads: usize, first_col: usize, rotate: bool| -> Vec<f32> {
        let mut out: Vec<f32> = Vec::with_capacity(b * n_heads * t * hd);
        out.spare_capacity_mut()
            .par_chunks_mut(t * hd)
            .enumerate()
            .for_each(|(bh, dst)| {
                let (bi, hi) = (bh / n_heads, bh % n_heads);
                let col = first_col + hi * hd;
                for (ti, d) in dst.chunks_mut(hd).enumerate() {
                    let row = (bi * t + ti) * width + col;
                    let x = &qkv[row..row + hd];
                    if rotate {
                        let (c, s) = (&cos[ti * half..][..half], &sin[ti * half..][..half]);
                        let (d1, d2) = d.split_at_mut(half);
                        for i in 0..half {
                            let (x1, x2) = (x[i], x[i + half]);
                            d1[i].write(x1 * c[i] - x2 * s[i]);
                            d2[i].write(x1 * s[i] + x2 * c[i]);
                        }
                    } else {
                        for (o, &v) in d.iter_mut().zip(x) {
                            o.write(v);
                        }
                    }
                }
            });
        // SAFETY: the chunks cover b * n_heads * t * hd elements, each written once above.
        unsafe { out.set_len(b * n_heads * t * hd) };
        out
    };
    let q = head(h, 0, true);
    let k = head(kvh, h * hd, true);
    let v = head(kvh, (h + kvh) * hd, false);
    (q, k, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Device, Tensor};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 8.0 - 4.0
            })
            .collect()
    }

    #[test]
    fn silu_mul_is_candles_silu_times_up_bit_for_bit() {
        // 37 rows: two full tasks of 16 and a short one.
        let (rows, f) = (37, 24);
        let gu = values(rows * 2 * f, 7);
        let t = Tensor::from_vec(gu.clone(), (rows, 2 * f), &Device::Cpu).unwrap();
        let want = (t.narrow(D::Minus1, 0, f).unwrap().silu().unwrap()
            * t.narrow(D::Minus1, f, f).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        let got = silu_mul(&gu, f);
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "element {i}: {g} vs {w}");
        }
    }

    #[test]
    fn split_heads_rope_is_candles_transpose_and_rope_bit_for_bit() {
        let shape = QkvShape {
            batch: 2,
            tokens: 5,
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
        };
        let (b, t, h, kvh, hd) = (2, 5, 4, 2, 8);
        let qkv = values(b * t * (h + 2 * kvh) * hd, 3);
        let cos = values(t * hd / 2, 4);
        let sin = values(t * hd / 2, 5);
        let (q, k, v) = split_heads_rope(&qkv, shape, &cos, &sin);

        let dev = Device::Cpu;
        let x = Tensor::from_vec(qkv, (b, t, (h + 2 * kvh) * hd), &dev).unwrap();
        let c = Tensor::from_vec(cos, (t, hd / 2), &dev).unwrap();
        let s = Tensor::from_vec(sin, (t, hd / 2), &dev).unwrap();
        let part = |start: usize, n: usize, rotate: bool| -> Vec<f32> {
            let p = x
                .narrow(D::Minus1, start * hd, n * hd)
                .unwrap()
                .reshape((b, t, n, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap();
            let p = if rotate {
                candle_nn::rotary_emb::rope(&p, &c, &s).unwrap()
            } else {
                p
            };
            p.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        for (name, got, want) in [
            ("q", q, part(0, h, true)),
            ("k", k, part(h, kvh, true)),
            ("v", v, part(h + kvh, kvh, false)),
        ] {
            assert_eq!(got.len(), want.len(), "{name}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{name}[{i}]: {g} vs {w}");
            }
        }
    }
}
