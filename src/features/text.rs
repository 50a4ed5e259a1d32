//! Text features on the 2 Hz grid: TRIBE v2's `HuggingFaceText` extractor (SPEC §5.0-5.3, §6).
//!
//! Each word is read by the language model in its context (up to 1,024 previous words of
//! running text, see [`context`](super::context)); its feature is the mean, over the word's own
//! tokens, of each kept hidden state, averaged in two layer groups ([`layers`]),
//! and summed onto the 2 Hz bins its time span touches ([`text_grid`]).
//!
//! Two ways to read the contexts (DESIGN.md §7):
//! - [`ContextMode::Exact`] (default) gives every word the reference's own context. The words
//!   whose context starts at the timeline's first word (the first 1,025) are read in one causal
//!   pass over the longest of those contexts: a causal model's hidden state at a token depends
//!   only on the tokens before it, so a word's tokens in that pass equal those of its own
//!   context. This is used only where the word's context tokenizes to an exact prefix of the
//!   long one (BPE can merge across the boundary, e.g. "it?" + ". " -> "?."); other words get
//!   their own pass. Later words each need their own pass (their context drops a word at the
//!   front every time).
//! - [`ContextMode::Fast`] reads later words in strided windows: words `f..f+S` share one pass
//!   over the text from word `f - 1024`, so each word sees at least 1,024 previous words (more
//!   than the reference toward the end of a window). About 500x fewer FLOPs at S = 1,024.

use std::ops::Range;
use std::path::Path;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use ndarray::{Array2, Array3};
use rayon::prelude::*;

use crate::cli::toolbox::FeaturesArgs;
use crate::error::{Error, Result};
use crate::features::context::{Contexts, MAX_CONTEXT_WORDS};
use crate::features::decoder::{Decoder, DecoderConfig};
use crate::features::layers;
use crate::features::text_grid::{self, FEATURE_HZ};
use crate::features::tokenize::TextTokenizer;
use crate::stimulus::words::{Word, read_words_tsv};

/// How word contexts are read (`--text-context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextMode {
    Exact,
    Fast,
}

impl FromStr for ContextMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exact" => Ok(ContextMode::Exact),
            "fast" => Ok(ContextMode::Fast),
            other => Err(Error::Usage(format!(
                "--text-context must be 'exact' or 'fast', not '{other}'"
            ))),
        }
    }
}

/// Settings of the text extractor. The defaults are the released TRIBE v2 configuration.
#[derive(Debug, Clone)]
pub struct TextOptions {
    pub context: ContextMode,
    /// Previous words in a context (`AddContextToWords.max_context_len`).
    pub max_context_words: usize,
    /// Fast mode: words that share one window (each still sees `max_context_words` before it).
    pub fast_stride: usize,
    /// Contexts per forward pass.
    pub batch_size: usize,
    /// Upper bound on padded tokens per forward pass (bounds activation memory).
    pub max_batch_tokens: usize,
    /// `data.layers_to_use`.
    pub layer_fractions: Vec<f64>,
    /// `cache_n_layers`: hidden states kept before grouping.
    pub max_layers: usize,
    /// Compute dtype; `None`: f32 on CPU, bf16 on GPU (transformers 5's `dtype="auto"` for
    /// the bf16 Llama checkpoint, as the released demo ran).
    pub dtype: Option<DType>,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            context: ContextMode::Exact,
            max_context_words: MAX_CONTEXT_WORDS,
            fast_stride: MAX_CONTEXT_WORDS,
            batch_size: 4,
            max_batch_tokens: 8192,
            layer_fractions: layers::DEFAULT_FRACTIONS.to_vec(),
            max_layers: layers::DEFAULT_MAX_LAYERS,
            dtype: None,
        }
    }
}

/// One forward pass: a token sequence and the words whose tokens are read from it.
#[derive(Debug, Clone)]
pub struct Pass {
    pub ids: Vec<u32>,
    /// (word index in reading order, token positions to average).
    pub spans: Vec<(usize, Range<usize>)>,
}

/// What has to be run for a set of words.
#[derive(Debug, Clone)]
pub struct Plan {
    pub passes: Vec<Pass>,
    /// Words in reading order: indices into the caller's slice.
    pub order: Vec<usize>,
    /// Words (reading order) without a feature: empty context (neuralset `RemoveMissing`)
    /// or not requested.
    pub skipped: Vec<usize>,
}

impl Plan {
    /// Forward FLOPs of the plan for a model of this shape (multiply-add = 2 FLOPs; linear
    /// layers plus causal attention; embeddings and norms are negligible).
    pub fn flops(&self, c: &DecoderConfig) -> f64 {
        self.passes.iter().map(|p| pass_flops(c, p.ids.len())).sum()
    }
}

/// FLOPs of one causal pass of `n` tokens.
pub fn pass_flops(c: &DecoderConfig, n: usize) -> f64 {
    let d = c.hidden_size as f64;
    let hd = c.head_dim as f64;
    let q = c.num_attention_heads as f64 * hd;
    let kv = c.num_key_value_heads as f64 * hd;
    let f = c.intermediate_size as f64;
    let linear_per_token = 2.0 * (d * (q + 2.0 * kv) + q * d + 3.0 * d * f);
    let n = n as f64;
    // QK^T and PV over the causal triangle: sum_t (t + 1) keys per query.
    let attn = 2.0 * 2.0 * q * n * (n + 1.0) / 2.0;
    c.num_hidden_layers as f64 * (linear_per_token * n + attn)
}

/// Python's `str.rstrip()` (Unicode whitespace, plus the ASCII separators Python counts).
fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// Python `s[:-k]` on code points (empty when `k >= len`).
fn drop_last_chars(s: &str, k: usize) -> &str {
    let n = s.chars().count();
    if k >= n {
        return "";
    }
    let byte = s.char_indices().nth(n - k).map_or(s.len(), |(b, _)| b);
    &s[..byte]
}

/// The word's token positions in its own context (SPEC §5.3): re-tokenize the context minus
/// the word (right-stripped), and take what follows (at least one token).
fn reference_span(
    tok: &TextTokenizer,
    context: &str,
    word: &str,
    n_ctx: usize,
) -> Result<Range<usize>> {
    let prefix = py_rstrip(drop_last_chars(context, word.chars().count()));
    let n_prefix = if prefix.is_empty() {
        0
    } else {
        tok.encode(prefix)?.len()
    };
    let n_target = (n_ctx as i64 - n_prefix as i64).max(1) as usize;
    let n_target = n_target.min(n_ctx);
    Ok(n_ctx - n_target..n_ctx)
}

/// A word's context tokens and its span in them.
type WordTokens = (Vec<u32>, Range<usize>);

/// Reading order (SPEC §5.0): onset ascending, longer first on ties, stable otherwise.
fn reading_order(words: &[Word]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..words.len()).collect();
    order.sort_by(|&a, &b| {
        words[a]
            .onset
            .total_cmp(&words[b].onset)
            .then(words[b].duration.total_cmp(&words[a].duration))
    });
    order
}

/// Plan the passes for `words` (in any order); `wanted[i]` (caller's order) limits which
/// words need a feature (all words still give context).
pub fn plan(
    tok: &TextTokenizer,
    words: &[Word],
    wanted: Option<&[bool]>,
    opts: &TextOptions,
) -> Result<Plan> {
    let order = reading_order(words);
    let texts: Vec<&str> = order.iter().map(|&i| words[i].text.as_str()).collect();
    let ctx = Contexts::build(&texts, opts.max_context_words);
    let n = order.len();
    let want = |r: usize| wanted.is_none_or(|w| w[order[r]]);
    let mut passes = Vec::new();
    let mut skipped = Vec::new();
    if n == 0 {
        return Ok(Plan {
            passes,
            order,
            skipped,
        });
    }

    // Words whose context starts at the first word share the longest such context.
    let chain_last = (n - 1).min(opts.max_context_words);
    let chain_wanted: Vec<usize> = (0..=chain_last).filter(|&r| want(r)).collect();
    if let Some(&m) = chain_wanted.last() {
        let long = ctx.context(m);
        let long_ids = tok.encode(&long)?;
        let per_word: Vec<Result<Option<WordTokens>>> = chain_wanted
            .par_iter()
            .map(|&r| {
                let c = ctx.context(r);
                if c.is_empty() {
                    return Ok(None);
                }
                let ids = if r == m {
                    long_ids.clone()
                } else {
                    tok.encode(&c)?
                };
                if ids.is_empty() {
                    return Ok(None);
                }
                let span = reference_span(tok, &c, texts[r], ids.len())?;
                Ok(Some((ids, span)))
            })
            .collect();
        let mut shared = Pass {
            ids: long_ids.clone(),
            spans: Vec::new(),
        };
        for (&r, res) in chain_wanted.iter().zip(per_word) {
            match res? {
                None => skipped.push(r),
                Some((ids, span)) if long_ids.starts_with(&ids) => shared.spans.push((r, span)),
                Some((ids, span)) => passes.push(Pass {
                    ids,
                    spans: vec![(r, span)],
                }),
            }
        }
        if !shared.spans.is_empty() {
            passes.push(shared);
        }
    }
    skipped.extend((0..=chain_last).filter(|&r| !want(r)));

    let rest: Vec<usize> = (chain_last + 1..n).collect();
    match opts.context {
        ContextMode::Exact => {
            let per_word: Vec<Result<Option<Pass>>> = rest
                .par_iter()
                .filter(|&&r| want(r))
                .map(|&r| {
                    let c = ctx.context(r);
                    if c.is_empty() {
                        return Ok(None);
                    }
                    let ids = tok.encode(&c)?;
                    if ids.is_empty() {
                        return Ok(None);
                    }
                    let span = reference_span(tok, &c, texts[r], ids.len())?;
                    Ok(Some(Pass {
                        ids,
                        spans: vec![(r, span)],
                    }))
                })
                .collect();
            for (r, p) in rest.iter().filter(|&&r| want(r)).zip(per_word) {
                match p? {
                    Some(p) => passes.push(p),
                    None => skipped.push(*r),
                }
            }
        }
        ContextMode::Fast => {
            let stride = opts.fast_stride.max(1);
            for block in rest.chunks(stride) {
                let members: Vec<usize> = block.iter().copied().filter(|&r| want(r)).collect();
                let Some(&last) = members.last() else {
                    continue;
                };
                let first_word = members[0];
                let first = ctx.context_start(first_word);
                let window = ctx.window(first, last);
                let (ids, offsets) = tok.encode_with_offsets(&window)?;
                let mut spans = Vec::new();
                // Character position where each part ends in the window.
                let mut pos = 0usize;
                let mut r = first;
                for &w in &members {
                    while r < w {
                        pos += ctx.final_parts[r].chars().count();
                        r += 1;
                    }
                    let end = pos + ctx.new_parts[w].chars().count();
                    let word_chars = texts[w].chars().count();
                    let head: String = window
                        .chars()
                        .take(end.saturating_sub(word_chars))
                        .collect();
                    let p = py_rstrip(&head).chars().count();
                    let toks: Vec<usize> = (0..ids.len())
                        .filter(|&t| offsets[t].1 > p && offsets[t].0 < end)
                        .collect();
                    let span = match (toks.first(), toks.last()) {
                        (Some(&a), Some(&b)) => a..b + 1,
                        _ => {
                            let b = (0..ids.len()).rev().find(|&t| offsets[t].0 < end.max(1));
                            match b {
                                Some(b) => b..b + 1,
                                None => {
                                    skipped.push(w);
                                    continue;
                                }
                            }
                        }
                    };
                    spans.push((w, span));
                }
                if !spans.is_empty() {
                    passes.push(Pass { ids, spans });
                }
            }
        }
    }
    skipped.extend(rest.iter().copied().filter(|&r| !want(r)));
    skipped.sort_unstable();
    Ok(Plan {
        passes,
        order,
        skipped,
    })
}

/// The text extractor: a decoder, its tokenizer and the TRIBE settings.
pub struct TextExtractor {
    decoder: Decoder,
    tokenizer: TextTokenizer,
    options: TextOptions,
    /// Hidden-state indices kept (layer subselection).
    kept: Vec<usize>,
    /// Positions into `kept` averaged per output layer group.
    groups: Vec<Range<usize>>,
}

impl TextExtractor {
    /// Load an HF model folder: `config.json`, `tokenizer.json`, safetensors weights.
    pub fn load(model_dir: &Path, device: &Device, options: TextOptions) -> Result<Self> {
        if !model_dir.is_dir() {
            return Err(Error::InputMissing {
                path: model_dir.to_path_buf(),
                what: "the text model folder".into(),
                fix: "point --model at a Hugging Face model folder (e.g. Llama-3.2-3B)".into(),
            });
        }
        let config_path = model_dir.join("config.json");
        let config = DecoderConfig::from_file(&config_path)?;
        let tokenizer = TextTokenizer::load(&model_dir.join("tokenizer.json"))?;
        tokenizer.check_matches_model(config.vocab_size, config.eos_token_id, &config_path)?;
        let dtype = options.dtype.unwrap_or(if device.is_cpu() {
            DType::F32
        } else {
            DType::BF16
        });
        let decoder = Decoder::load(model_dir, device, dtype)?;
        Ok(Self::new(decoder, tokenizer, options))
    }

    /// The dtype the LLaMA computes in (recorded with the features).
    pub fn dtype(&self) -> DType {
        self.decoder.dtype()
    }

    pub fn new(decoder: Decoder, tokenizer: TextTokenizer, options: TextOptions) -> Self {
        let n = decoder.n_hidden_states();
        let kept = layers::subselect(n, options.max_layers);
        let groups = layers::group_mean_groups(kept.len(), &options.layer_fractions);
        TextExtractor {
            decoder,
            tokenizer,
            options,
            kept,
            groups,
        }
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    pub fn options(&self) -> &TextOptions {
        &self.options
    }

    /// Output layer groups L (2 for the released settings).
    pub fn n_groups(&self) -> usize {
        self.groups.len()
    }

    pub fn hidden_size(&self) -> usize {
        self.decoder.config.hidden_size
    }

    /// Hidden-state indices kept before grouping.
    pub fn kept_layers(&self) -> &[usize] {
        &self.kept
    }

    /// Per word (caller's order): the token mean of every kept hidden state, (n_kept, D), or
    /// `None` for a word the reference drops (empty context).
    pub fn word_layer_means(&self, words: &[Word]) -> Result<Vec<Option<Array2<f32>>>> {
        let plan = plan(&self.tokenizer, words, None, &self.options)?;
        self.run(&plan, words.len(), false)
    }

    /// Per word (caller's order): the TRIBE feature (L, D), or `None` when dropped.
    pub fn word_features(&self, words: &[Word]) -> Result<Vec<Option<Array2<f32>>>> {
        let plan = plan(&self.tokenizer, words, None, &self.options)?;
        self.run(&plan, words.len(), true)
    }

    /// `tribe features text`: the (L, D, n_bins) array on the 2 Hz grid of
    /// `[start, start + duration)`. Only words overlapping the window are run through the
    /// model; all words give context.
    pub fn features(&self, words: &[Word], start: f64, duration: f64) -> Result<Array3<f32>> {
        let wanted: Vec<bool> = words
            .iter()
            .map(|w| {
                text_grid::word_bins(w.onset, w.duration, start, duration, FEATURE_HZ).is_some()
            })
            .collect();
        let plan = plan(&self.tokenizer, words, Some(&wanted), &self.options)?;
        let feats = self.run(&plan, words.len(), true)?;
        Ok(bin_word_features(
            words,
            &feats,
            &plan.order,
            self.n_groups(),
            self.hidden_size(),
            start,
            duration,
        ))
    }

    /// Execute a plan. Results are in the caller's order; `grouped` selects (L, D) group
    /// means instead of (n_kept, D) layer means.
    pub fn run(
        &self,
        plan: &Plan,
        n_words: usize,
        grouped: bool,
    ) -> Result<Vec<Option<Array2<f32>>>> {
        let d = self.hidden_size();
        // Where each hidden state's token mean goes: its row in the per-word buffer. Grouped,
        // the buffer holds one running sum per layer group (states outside every group are not
        // even averaged), so memory is L x D per word rather than 20 x D.
        let mut row_of_state = vec![None; self.decoder.n_hidden_states()];
        let rows = if grouped {
            for (g, range) in self.groups.iter().enumerate() {
                for k in range.clone() {
                    row_of_state[self.kept[k]] = Some(g);
                }
            }
            self.groups.len()
        } else {
            for (k, &s) in self.kept.iter().enumerate() {
                row_of_state[s] = Some(k);
            }
            self.kept.len()
        };
        let dtype = self.decoder.dtype();
        let mut acc: Vec<Option<Vec<f32>>> = vec![None; plan.order.len()];

        let mut idx: Vec<usize> = (0..plan.passes.len()).collect();
        idx.sort_by_key(|&i| std::cmp::Reverse(plan.passes[i].ids.len()));
        let mut i = 0;
        while i < idx.len() {
            // Batch passes of similar length (sorted), within the size and token budgets.
            let t0 = plan.passes[idx[i]].ids.len();
            let mut j = i + 1;
            while j < idx.len()
                && j - i < self.options.batch_size.max(1)
                && (j - i + 1) * t0 <= self.options.max_batch_tokens
            {
                j += 1;
            }
            let batch: Vec<&Pass> = idx[i..j].iter().map(|&k| &plan.passes[k]).collect();
            let seqs: Vec<&[u32]> = batch.iter().map(|p| p.ids.as_slice()).collect();
            for p in &batch {
                for (w, _) in &p.spans {
                    acc[*w].get_or_insert_with(|| vec![0f32; rows * d]);
                }
            }
            self.decoder.forward_visit(&seqs, &mut |state, h| {
                let Some(row) = row_of_state[state] else {
                    return Ok(());
                };
                for (b, p) in batch.iter().enumerate() {
                    let hb = h.get(b)?;
                    for (w, span) in &p.spans {
                        // The reference averages in the model dtype (torch accumulates a bf16
                        // mean in f32 and rounds once), then `.float()`.
                        let tokens = hb.narrow(0, span.start, span.len())?;
                        let mean = if dtype == DType::F32 {
                            tokens.mean(0)?
                        } else {
                            tokens
                                .to_dtype(DType::F32)?
                                .mean(0)?
                                .to_dtype(dtype)?
                                .to_dtype(DType::F32)?
                        };
                        let mean = mean.to_vec1::<f32>()?;
                        if let Some(dst) = acc[*w].as_mut() {
                            for (x, y) in dst[row * d..(row + 1) * d].iter_mut().zip(mean) {
                                *x += y;
                            }
                        }
                    }
                }
                Ok(())
            })?;
            i = j;
        }

        let mut out = vec![None; n_words];
        for (r, m) in acc.into_iter().enumerate() {
            let Some(mut m) = m else { continue };
            if grouped {
                for (g, range) in self.groups.iter().enumerate() {
                    m[g * d..(g + 1) * d]
                        .iter_mut()
                        .for_each(|x| *x /= range.len() as f32);
                }
            }
            let arr =
                Array2::from_shape_vec((rows, d), m).map_err(|e| Error::Other(e.to_string()))?;
            out[plan.order[r]] = Some(arr);
        }
        Ok(out)
    }

    /// Bin per-word features (from [`word_features`](Self::word_features), caller's order)
    /// onto the grid of `[start, start + duration)`: compute a timeline's words once, then
    /// bin each 100 s segment.
    pub fn bin(
        &self,
        words: &[Word],
        feats: &[Option<Array2<f32>>],
        start: f64,
        duration: f64,
    ) -> Array3<f32> {
        bin_word_features(
            words,
            feats,
            &reading_order(words),
            self.n_groups(),
            self.hidden_size(),
            start,
            duration,
        )
    }
}

/// Sum per-word (L, D) features onto the 2 Hz grid of `[start, start + duration)`, in reading
/// order (`order`), giving (L, D, n_bins). Words without a feature add nothing.
pub fn bin_word_features(
    words: &[Word],
    feats: &[Option<Array2<f32>>],
    order: &[usize],
    n_groups: usize,
    dim: usize,
    start: f64,
    duration: f64,
) -> Array3<f32> {
    let mut spans = Vec::new();
    let mut vecs = Vec::new();
    for &i in order {
        if let Some(f) = &feats[i] {
            spans.push((words[i].onset, words[i].duration));
            vecs.push(f.iter().copied().collect::<Vec<f32>>());
        }
    }
    let (data, n) =
        text_grid::bin_words(&spans, &vecs, n_groups * dim, start, duration, FEATURE_HZ);
    Array3::from_shape_vec((n_groups, dim, n), data)
        .expect("bin_words returns n_groups * dim * n values")
}

/// The device named on the command line (`cpu`, `cuda`, `cuda:N`, `auto`).
fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let n: usize = s
                .strip_prefix("cuda:")
                .map_or(Ok(0), str::parse)
                .map_err(|_| {
                    Error::Usage(format!(
                        "--device '{s}': expected cpu, cuda, cuda:N or auto"
                    ))
                })?;
            Device::new_cuda(n).map_err(|e| {
                Error::Usage(format!("--device {s}: no CUDA device ({e}); build with --features cuda on a GPU machine, or use --device cpu"))
            })
        }
        other => Err(Error::Usage(format!(
            "--device '{other}': expected cpu, cuda, cuda:N or auto"
        ))),
    }
}

/// Write float32 arrays to a safetensors file (atomically).
fn write_safetensors(
    path: &Path,
    tensors: &[(&str, &Array3<f32>)],
    metadata: std::collections::HashMap<String, String>,
) -> Result<()> {
    let mut views = Vec::new();
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, a)| a.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    for ((name, a), b) in tensors.iter().zip(&bytes) {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, a.shape().to_vec(), b)
                .map_err(|e| Error::Other(format!("safetensors: {e}")))?;
        views.push((name.to_string(), view));
    }
    let data = safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| Error::Other(format!("safetensors: {e}")))?;
    crate::util::write_atomic(path, &data)
}

/// `tribe features text`.
pub fn features_cli(args: &FeaturesArgs) -> Result<()> {
    let context: ContextMode = args.text_context.parse()?;
    let device = parse_device(&args.device)?;
    let words = read_words_tsv(&args.input)?;
    let duration = match args.duration {
        Some(d) => d,
        None => {
            let end = words
                .iter()
                .map(|w| w.onset + w.duration)
                .fold(0.0f64, f64::max);
            (end - args.start).max(0.0)
        }
    };
    if !(duration.is_finite() && duration >= 0.0 && args.start.is_finite()) {
        return Err(Error::Usage(format!(
            "--start {} --duration {duration}: need a finite start and a duration >= 0",
            args.start
        )));
    }
    let dtype = match args.dtype.as_str() {
        "f32" => Some(DType::F32),
        "bf16" => Some(DType::BF16),
        _ => None,
    };
    let options = TextOptions {
        context,
        dtype,
        ..TextOptions::default()
    };
    let extractor = TextExtractor::load(&args.model, &device, options)?;
    let t0 = std::time::Instant::now();
    let feats = extractor.features(&words, args.start, duration)?;
    tracing::info!(
        words = words.len(),
        shape = ?feats.shape(),
        seconds = t0.elapsed().as_secs_f64(),
        "text features"
    );
    let mut meta = std::collections::HashMap::new();
    meta.insert("modality".to_string(), "text".to_string());
    meta.insert("start".to_string(), args.start.to_string());
    meta.insert("duration".to_string(), duration.to_string());
    meta.insert("frequency".to_string(), FEATURE_HZ.to_string());
    meta.insert("text_context".to_string(), args.text_context.clone());
    meta.insert("dtype".to_string(), format!("{:?}", extractor.dtype()));
    meta.insert("model".to_string(), args.model.display().to_string());
    write_safetensors(&args.out, &[("text", &feats)], meta)
}

/// Per-word features as one tensor (n_words, L, D), zeros for dropped words (for callers
/// that stay in candle).
pub fn stack_word_features(
    feats: &[Option<Array2<f32>>],
    n_groups: usize,
    dim: usize,
    device: &Device,
) -> Result<Tensor> {
    let mut data = Vec::with_capacity(feats.len() * n_groups * dim);
    for f in feats {
        match f {
            Some(a) => data.extend(a.iter().copied()),
            None => data.extend(std::iter::repeat_n(0f32, n_groups * dim)),
        }
    }
    Ok(Tensor::from_vec(
        data,
        (feats.len(), n_groups, dim),
        device,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_string_helpers() {
        assert_eq!(drop_last_chars("And mister", 6), "And ");
        assert_eq!(drop_last_chars("café", 1), "caf");
        assert_eq!(drop_last_chars("ab", 5), "");
        assert_eq!(py_rstrip("a b \t\n\x1f"), "a b");
    }

    #[test]
    fn reading_order_is_onset_then_longer_first() {
        let w = vec![
            Word::new(1.0, 0.1, "c"),
            Word::new(0.5, 0.1, "a"),
            Word::new(1.0, 0.3, "b"),
        ];
        assert_eq!(reading_order(&w), vec![1, 2, 0]);
    }

    #[test]
    fn context_mode_parses() {
        assert_eq!("fast".parse::<ContextMode>().unwrap(), ContextMode::Fast);
        assert!("slow".parse::<ContextMode>().is_err());
    }
}
