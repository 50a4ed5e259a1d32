//! Text-model benchmarks (run with `cargo bench --bench llama`, or bench/compare_llama.sh for
//! the side-by-side with PyTorch).
//!
//! 1. Full-width Llama-3.2-3B decoder layers (hidden 3072, 24 heads, 8 KV heads, FFN 8192) with
//!    random weights, f32 on CPU: a few layers are timed and scaled to the real 28, since every
//!    layer costs the same.
//! 2. FLOPs per word for `--text-context exact` and `fast` on a 10-minute transcript (real
//!    fixture transcripts repeated), from the pass plan with the real tokenizer.
//! 3. Wall time of the whole extractor on the tiny fixture model.
//! 4. Agreement of `fast` with `exact` on the real transcripts of tests/fixtures/data/stimuli.
//!
//! Settings (environment): TRIBE_BENCH_LAYERS (4), TRIBE_BENCH_T (token counts, "512,1400"),
//! TRIBE_BENCH_REPS (2), TRIBE_BENCH_FORWARD_ONLY=1 (part 1 only), TRIBE_BENCH_GEMM=1 (only the
//! layer's four products, against `bench/llama_torch.py --gemm`). The last line printed is JSON for bench/compare_llama.sh.
//! Numbers from a shared 2-core machine are noisy: compare runs made back to back.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use tribe_bids::features::decoder::{Decoder, DecoderConfig, Family};
use tribe_bids::features::text::{ContextMode, TextExtractor, TextOptions, pass_flops, plan};
use tribe_bids::stimulus::words::{Word, read_words_tsv};

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// The tiny Llama folder with its tokenizer unpacked (the fixture keeps `tokenizer.json.gz`).
fn tiny_llama() -> PathBuf {
    let src = fixture("models-tiny/Llama-3.2-3B");
    let dst = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-llama-tiny");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let from = e.unwrap().path();
        let name = from.file_name().unwrap().to_string_lossy().into_owned();
        match name.strip_suffix(".gz") {
            Some(plain) => {
                let mut gz = flate2::read::GzDecoder::new(std::fs::File::open(&from).unwrap());
                let mut out = std::fs::File::create(dst.join(plain)).unwrap();
                std::io::copy(&mut gz, &mut out).unwrap();
            }
            None => {
                std::fs::copy(&from, dst.join(&name)).unwrap();
            }
        }
    }
    dst
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// CPU time (user + system) of this process in seconds, from /proc (10 ms ticks): on a
/// machine shared with other jobs, wall time measures the neighbours as much as the code.
fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Peak resident set size of this process (kB), from /proc.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn llama_3b(layers: usize) -> DecoderConfig {
    DecoderConfig {
        family: Family::Llama,
        hidden_size: 3072,
        intermediate_size: 8192,
        num_hidden_layers: layers,
        num_attention_heads: 24,
        num_key_value_heads: 8,
        head_dim: 128,
        rms_norm_eps: 1e-5,
        rope_theta: 500000.0,
        rope_scaling: Some(tribe_bids::features::decoder::Llama3Scaling {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        }),
        vocab_size: 128256,
        attention_bias: false,
        tie_word_embeddings: true,
        torch_dtype: Some("bfloat16".into()),
        bos_token_id: Some(128000),
        eos_token_id: Some(128001),
    }
}

/// A 10-minute transcript: the real fixture transcripts, one after the other, repeated.
fn ten_minute_transcript() -> Vec<Word> {
    let sources = [
        fixture("e2e/words.tsv"),
        fixture("hf/llama-tiny-textfeat-words.tsv"),
    ];
    let pieces: Vec<Vec<Word>> = sources.iter().map(|p| read_words_tsv(p).unwrap()).collect();
    let mut out = Vec::new();
    let mut offset = 0.0;
    'outer: loop {
        for piece in &pieces {
            let t0 = piece[0].onset;
            let end = piece
                .iter()
                .map(|w| w.onset + w.duration)
                .fold(0.0, f64::max);
            for w in piece {
                let onset = offset + w.onset - t0;
                if onset >= 600.0 {
                    break 'outer;
                }
                out.push(Word::new(onset, w.duration, w.text.clone()));
            }
            offset += end - t0 + 0.5;
        }
    }
    out
}

/// The real transcripts of tests/fixtures/data/stimuli on one timeline: LibriVox (5 clips,
/// pocketsphinx words without `<sil>` and `(2)` tags), JFK (pocketsphinx), Alice (espeak-ng
/// words, empty events dropped).
fn real_transcripts() -> Vec<Word> {
    let dir = fixture("data/stimuli");
    let clean = |t: &str| t.split('(').next().unwrap_or("").trim().to_string();
    let mut pieces: Vec<Vec<Word>> = Vec::new();
    for id in ["0870", "0880", "0890", "0920", "0930"] {
        let p = dir.join(format!(
            "pocketsphinx-librivox/sense_and_sensibility_01_austen_64kb-{id}.json"
        ));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        let words = v["w"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| {
                let t = clean(w["t"].as_str()?);
                (!t.is_empty() && !t.starts_with('<'))
                    .then(|| Some(Word::new(w["b"].as_f64()?, w["d"].as_f64()?, t)))
                    .flatten()
            })
            .collect();
        pieces.push(words);
    }
    for f in [
        "whisper-jfk/jfk_words_pocketsphinx-5.1.1.tsv",
        "espeak-ng-generated/alice_espeak_words.tsv",
    ] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        let words = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let c: Vec<&str> = l.split('\t').collect();
                let t = clean(c.get(2)?);
                (!t.is_empty() && !t.starts_with('<'))
                    .then(|| Some(Word::new(c[0].parse().ok()?, c[1].parse().ok()?, t)))
                    .flatten()
            })
            .collect();
        pieces.push(words);
    }
    let mut out = Vec::new();
    let mut offset = 0.0;
    for piece in pieces {
        let end = piece
            .iter()
            .map(|w| w.onset + w.duration)
            .fold(0.0, f64::max);
        out.extend(
            piece
                .into_iter()
                .map(|w| Word::new(w.onset + offset, w.duration, w.text)),
        );
        offset += end + 1.0;
    }
    out
}

fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&x| x as f64).sum::<f64>() / n,
        b.iter().map(|&x| x as f64).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt()
}

/// `--text-context fast` vs `exact` on the real transcripts. They are far shorter than 1,024
/// words, where both modes are identical, so the context is scaled down (C words of context,
/// windows of S words): the geometry of the real setting (C = S = 1,024) at 1/64 and 1/32
/// scale, and a smaller stride (each word sees C..C+S words: closer to exact, more FLOPs).
fn fast_vs_exact(tiny: &Path) -> serde_json::Value {
    let words = real_transcripts();
    let mut out = serde_json::Map::new();
    for (c, stride) in [(16usize, 16usize), (32, 32), (32, 8)] {
        let opts = |context| TextOptions {
            context,
            max_context_words: c,
            fast_stride: stride,
            ..TextOptions::default()
        };
        let exact = TextExtractor::load(tiny, &Device::Cpu, opts(ContextMode::Exact)).unwrap();
        let fast = TextExtractor::load(tiny, &Device::Cpu, opts(ContextMode::Fast)).unwrap();
        let (le, lf) = (
            exact.word_layer_means(&words).unwrap(),
            fast.word_layer_means(&words).unwrap(),
        );
        let (ge, gf) = (
            exact.word_features(&words).unwrap(),
            fast.word_features(&words).unwrap(),
        );
        // Only words past the first C + 1 can differ; compare those.
        let order: Vec<usize> = {
            let mut o: Vec<usize> = (0..words.len()).collect();
            o.sort_by(|&a, &b| words[a].onset.total_cmp(&words[b].onset));
            o
        };
        let later: Vec<usize> = order[(c + 1).min(order.len())..].to_vec();
        let collect = |f: &[Option<ndarray::Array2<f32>>], row: usize| -> Vec<f32> {
            later
                .iter()
                .flat_map(|&w| f[w].as_ref().unwrap().row(row).to_vec())
                .collect()
        };
        let mut layers = Vec::new();
        for k in 0..exact.kept_layers().len() {
            let (a, b) = (collect(&le, k), collect(&lf, k));
            let maxd = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            let maxa = a.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
            layers.push(serde_json::json!({"state": exact.kept_layers()[k], "r": pearson(&a, &b), "max_abs_diff": maxd, "max_abs": maxa}));
        }
        let mut groups = Vec::new();
        for g in 0..exact.n_groups() {
            let (a, b) = (collect(&ge, g), collect(&gf, g));
            let maxd = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            groups
                .push(serde_json::json!({"group": g, "r": pearson(&a, &b), "max_abs_diff": maxd}));
        }
        println!(
            "fast vs exact, context {c} words, stride {stride}, {} words ({} compared):",
            words.len(),
            later.len()
        );
        for l in &layers {
            println!(
                "  state {}: r = {:.4}, max|d| = {:.3} (max|x| {:.2})",
                l["state"],
                l["r"].as_f64().unwrap(),
                l["max_abs_diff"].as_f64().unwrap(),
                l["max_abs"].as_f64().unwrap()
            );
        }
        for g in &groups {
            println!(
                "  group {}: r = {:.4}, max|d| = {:.3}",
                g["group"],
                g["r"].as_f64().unwrap(),
                g["max_abs_diff"].as_f64().unwrap()
            );
        }
        out.insert(format!("context_{c}_stride_{stride}"), serde_json::json!({"words": words.len(), "compared": later.len(), "states": layers, "groups": groups}));
    }
    out.into()
}

/// The four products of a LLaMA-3.2-3B layer through `matmul::linear`, alone
/// (`TRIBE_BENCH_GEMM=1`): the GEMM takes about 92 % of a layer's time (perf, 512 tokens), so
/// this is the figure to compare with PyTorch's `F.linear` on the same shapes.
fn gemm_alone(ts: &[usize], reps: usize) {
    use tribe_bids::features::matmul::linear;
    let shapes = [
        ("qkv", 3072, 5120),
        ("o", 3072, 3072),
        ("gate_up", 3072, 16384),
        ("down", 8192, 3072),
    ];
    for &m in ts {
        for (name, k, n) in shapes {
            let x = candle_core::Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
            let w = candle_core::Tensor::randn(0f32, 0.02, (k, n), &Device::Cpu).unwrap();
            linear(&x, &w).unwrap();
            let mut best = f64::MAX;
            for _ in 0..reps.max(3) {
                let t = Instant::now();
                linear(&x, &w).unwrap();
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "gemm {name} m={m} k={k} n={n}: {:.1} ms, {:.1} GFLOP/s",
                best * 1e3,
                2.0 * (m * k * n) as f64 / best / 1e9
            );
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is parsed.
    let n_layers = env_usize("TRIBE_BENCH_LAYERS", 4);
    let reps = env_usize("TRIBE_BENCH_REPS", 2).max(1);
    let ts: Vec<usize> = std::env::var("TRIBE_BENCH_T")
        .unwrap_or_else(|_| "512,1400".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let threads = rayon::current_num_threads();
    println!(
        "# llama bench: {n_layers} full-width Llama-3.2-3B layers, f32, CPU, {threads} threads"
    );

    if std::env::var("TRIBE_BENCH_GEMM").is_ok_and(|v| v == "1") {
        gemm_alone(&ts, reps);
        return;
    }

    let mut json = serde_json::Map::new();
    json.insert("threads".into(), threads.into());
    json.insert("layers_timed".into(), n_layers.into());

    // 1. Full-width layers, random weights (a small vocabulary: the embedding is a gather).
    let mut cfg = llama_3b(n_layers);
    cfg.vocab_size = 32000;
    let t = Instant::now();
    let mut dec = Decoder::random(cfg.clone(), &Device::Cpu, DType::F32).unwrap();
    dec.query_block = env_usize("TRIBE_BENCH_QUERY_BLOCK", dec.query_block);
    dec.mlp_rows = env_usize("TRIBE_BENCH_MLP_ROWS", dec.mlp_rows);
    println!("random weights: {:.1} s", t.elapsed().as_secs_f64());
    let mut rows = Vec::new();
    for &n in &ts {
        let ids: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 13) % 32000).collect();
        let run = || {
            let (t, c) = (Instant::now(), cpu_seconds());
            dec.forward_visit(&[&ids], &mut |_, _| Ok(())).unwrap();
            (t.elapsed().as_secs_f64(), cpu_seconds() - c)
        };
        run(); // warm-up
        let (mut best, mut cpu) = (f64::MAX, 0.0);
        for _ in 0..reps {
            let (w, c) = run();
            if w < best {
                (best, cpu) = (w, c);
            }
        }
        let flops = pass_flops(&cfg, n);
        let tps = n as f64 / best;
        let tps28 = tps * n_layers as f64 / 28.0;
        println!(
            "T={n}: {best:.3} s ({cpu:.2} CPU-s) for {n_layers} layers = {tps:.0} tokens/s ({:.1} GFLOP/s, {:.1} GFLOP per CPU-s); scaled to 28 layers: {tps28:.1} tokens/s",
            flops / best / 1e9,
            flops / cpu.max(1e-9) / 1e9
        );
        rows.push(serde_json::json!({"tokens": n, "seconds": best, "cpu_seconds": cpu, "tokens_per_s": tps, "tokens_per_s_28_layers": tps28, "gflops_per_s": flops / best / 1e9}));
    }
    json.insert("full_width".into(), rows.into());
    drop(dec);

    if std::env::var("TRIBE_BENCH_FORWARD_ONLY").is_ok_and(|v| v == "1") {
        json.insert("peak_rss_kb".into(), peak_rss_kb().into());
        println!("{}", serde_json::Value::Object(json));
        return;
    }

    // 2. FLOPs per word on a 10-minute transcript, real tokenizer, the real 28-layer shape.
    let words = ten_minute_transcript();
    let cfg28 = llama_3b(28);
    let tiny = tiny_llama();
    let tok =
        tribe_bids::features::tokenize::TextTokenizer::load(&tiny.join("tokenizer.json")).unwrap();
    let mut fl = serde_json::Map::new();
    for mode in [ContextMode::Exact, ContextMode::Fast] {
        let opts = TextOptions {
            context: mode,
            ..TextOptions::default()
        };
        let t = Instant::now();
        let p = plan(&tok, &words, None, &opts).unwrap();
        let f = p.flops(&cfg28);
        let tokens: usize = p.passes.iter().map(|p| p.ids.len()).sum();
        // Words past the first 1,025 (reading order) are where the modes differ.
        let late = |w: usize| w > opts.max_context_words;
        let late_words = (0..words.len()).filter(|&w| late(w)).count();
        let late_flops: f64 = p
            .passes
            .iter()
            .filter(|q| q.spans.iter().all(|(w, _)| late(*w)))
            .map(|q| pass_flops(&cfg28, q.ids.len()))
            .sum();
        println!(
            "{mode:?}: {} words, {} passes, {tokens} tokens, {:.3} TFLOP/word ({:.2} PFLOP total); words past the first 1,025: {:.4} TFLOP/word (plan {:.1} s)",
            words.len(),
            p.passes.len(),
            f / words.len() as f64 / 1e12,
            f / 1e15,
            late_flops / late_words.max(1) as f64 / 1e12,
            t.elapsed().as_secs_f64()
        );
        fl.insert(
            format!("{mode:?}").to_lowercase(),
            serde_json::json!({"words": words.len(), "passes": p.passes.len(), "tokens": tokens, "flops_per_word": f / words.len() as f64,
                               "late_words": late_words, "late_flops_per_word": late_flops / late_words.max(1) as f64}),
        );
    }
    json.insert("ten_minute_transcript".into(), fl.into());

    // 3. The whole extractor on the tiny fixture model.
    let words40 = read_words_tsv(&fixture("hf/llama-tiny-textfeat-words.tsv")).unwrap();
    let ex = TextExtractor::load(&tiny, &Device::Cpu, TextOptions::default()).unwrap();
    let t = Instant::now();
    let _ = ex.features(&words40, 0.2, 100.0).unwrap();
    let tiny_s = t.elapsed().as_secs_f64();
    println!(
        "tiny model, 40 words, exact, one 100 s window: {:.3} s",
        tiny_s
    );
    json.insert("tiny_40_words_seconds".into(), tiny_s.into());

    // 4. Fast vs exact agreement on the real transcripts (tiny model).
    json.insert("fast_vs_exact".into(), fast_vs_exact(&tiny));

    let rss = peak_rss_kb();
    println!("peak RSS: {:.2} GB", rss as f64 / 1e6);
    json.insert("peak_rss_kb".into(), rss.into());
    println!("{}", serde_json::Value::Object(json));
}
