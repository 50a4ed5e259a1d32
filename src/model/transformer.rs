//! The x_transformers 1.27.20 `Encoder` as TRIBE v2 configures it (SPEC §2.3): pre-norm
//! ScaleNorm, rotary on the first half of each head, softmax attention without mask, exact-GELU
//! feed-forward, a learned per-channel scale on the *skip* path of every residual, and a final
//! ScaleNorm.

use candle_core::Tensor;

use super::ops::{self, Kernels};
use super::trace::Trace;
use crate::error::Result;

/// F.normalize's eps inside x_transformers' ScaleNorm.
const SCALE_NORM_EPS: f64 = 1e-12;

/// One attention sublayer (`layers.{2i}`).
#[derive(Debug, Clone)]
pub struct AttentionBlock {
    pub norm_g: Tensor,
    /// `to_q`, `to_k`, `to_v` stacked (3*hidden, hidden): one GEMM instead of three.
    pub to_qkv: Tensor,
    pub to_out: Tensor,
    pub residual_scale: Tensor,
}

/// One feed-forward sublayer (`layers.{2i+1}`).
#[derive(Debug, Clone)]
pub struct FeedForwardBlock {
    pub norm_g: Tensor,
    pub w1: Tensor,
    pub b1: Tensor,
    pub w2: Tensor,
    pub b2: Tensor,
    pub residual_scale: Tensor,
}

#[derive(Debug, Clone)]
pub struct Encoder {
    pub heads: usize,
    pub blocks: Vec<(AttentionBlock, FeedForwardBlock)>,
    /// `rotary_pos_emb.inv_freq` as stored (the model uses the buffer, not a recomputation).
    pub inv_freq: Tensor,
    pub final_norm_g: Tensor,
}

impl Encoder {
    /// (B, T, hidden) -> (B, T, hidden).
    pub fn forward(&self, x: &Tensor, kern: Kernels, trace: &mut Trace) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let freqs = ops::rotary_freqs(&self.inv_freq, t)?;
        trace.record("rotary_freqs", &freqs);
        let mut x = x.clone();
        for (i, (attn, ff)) in self.blocks.iter().enumerate() {
            let (ia, iff) = (2 * i, 2 * i + 1);
            // Attention sublayer: x = Attn(ScaleNorm(x)) + x * residual_scale.
            let h = ops::scale_norm(&x, &attn.norm_g, SCALE_NORM_EPS)?;
            trace.record(&format!("enc.layers.{ia}.attn.normed"), &h);
            let qkv = ops::linear(&h, &attn.to_qkv, None, kern)?;
            drop(h);
            let (o, probs) = ops::attention(&qkv, self.heads, &freqs, trace.enabled(), kern)?;
            if let Some(p) = probs {
                trace.record(&format!("enc.layers.{ia}.attn.probs"), &p);
            }
            let branch = ops::linear(&o, &attn.to_out, None, kern)?;
            trace.record(&format!("enc.layers.{ia}.attn.branch"), &branch);
            x = (branch + x.broadcast_mul(&attn.residual_scale)?)?;
            trace.record(&format!("enc.layers.{ia}.attn.out"), &x);
            // Feed-forward sublayer: x = FF(ScaleNorm(x)) + x * residual_scale.
            let h = ops::scale_norm(&x, &ff.norm_g, SCALE_NORM_EPS)?;
            trace.record(&format!("enc.layers.{iff}.ff.normed"), &h);
            let hidden = ops::linear_gelu(&h, &ff.w1, Some(&ff.b1), kern)?;
            let branch = ops::linear(&hidden, &ff.w2, Some(&ff.b2), kern)?;
            trace.record(&format!("enc.layers.{iff}.ff.branch"), &branch);
            x = (branch + x.broadcast_mul(&ff.residual_scale)?)?;
            trace.record(&format!("enc.layers.{iff}.ff.out"), &x);
        }
        let y = ops::scale_norm(&x, &self.final_norm_g, SCALE_NORM_EPS)?;
        trace.record("enc.final_norm", &y);
        debug_assert_eq!(y.dims3()?.0, b);
        Ok(y)
    }
}
