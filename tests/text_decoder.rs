//! The LLaMA forward against transformers' hidden states (tests/fixtures/hf/llama-tiny-golden.*),
//! batching, sharded/unprefixed checkpoints, and broken model folders.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::fixture;
use tribe_bids::features::decoder::Decoder;
use tribe_bids::features::text::{TextExtractor, TextOptions};

fn tiny_dir() -> std::path::PathBuf {
    fixture("models-tiny/Llama-3.2-3B")
}

fn golden() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("hf/llama-tiny-golden.safetensors"), &Device::Cpu)
        .unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn ids_of(g: &HashMap<String, Tensor>, i: usize) -> Vec<u32> {
    g[&format!("ctx{i}.input_ids")]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap()
}

/// Every hidden state of the four golden contexts within 1e-4 * max|expected| (f32).
#[test]
fn hidden_states_match_transformers() {
    let g = golden();
    let dec = Decoder::load(&tiny_dir(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(dec.n_hidden_states(), 9);
    for i in 0..4 {
        let ids = ids_of(&g, i);
        let want = &g[&format!("ctx{i}.hidden_states")]; // (9, n, 64)
        let got = Tensor::stack(&dec.hidden_states(&ids).unwrap(), 0).unwrap();
        assert_eq!(got.dims(), want.dims());
        let diff = max_abs(&(&got - want).unwrap());
        let scale = max_abs(want);
        println!(
            "ctx{i}: {} tokens, max|d| = {diff:.3e}, max|expected| = {scale:.3}",
            ids.len()
        );
        assert!(
            diff <= 1e-4 * scale,
            "ctx{i}: max|d| {diff} > 1e-4 * {scale}"
        );
    }
}

/// A right-padded batch gives each sequence the hidden states it has alone, also when the
/// query and MLP row blocks are small (several blocks per sequence).
#[test]
fn padded_batch_equals_single_runs() {
    let g = golden();
    let mut dec = Decoder::load(&tiny_dir(), &Device::Cpu, DType::F32).unwrap();
    dec.query_block = 7;
    dec.mlp_rows = 5;
    let seqs: Vec<Vec<u32>> = (0..4).map(|i| ids_of(&g, i)).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let mut batched: Vec<Tensor> = Vec::new();
    dec.forward_visit(&refs, &mut |_, h| {
        batched.push(h.clone());
        Ok(())
    })
    .unwrap();
    let mut worst = 0f32;
    // The generic candle-op attention (what GPUs run) gives the same states.
    dec.fused_cpu_attention = false;
    let mut generic: Vec<Tensor> = Vec::new();
    dec.forward_visit(&refs, &mut |_, h| {
        generic.push(h.clone());
        Ok(())
    })
    .unwrap();
    for (a, g) in batched.iter().zip(&generic) {
        for (b, s) in seqs.iter().enumerate() {
            let d = max_abs(
                &(a.get(b).unwrap().narrow(0, 0, s.len()).unwrap()
                    - g.get(b).unwrap().narrow(0, 0, s.len()).unwrap())
                .unwrap(),
            );
            assert!(d <= 1e-5 * max_abs(a), "fused vs generic attention: {d}");
        }
    }
    for (b, s) in seqs.iter().enumerate() {
        let want = &g[&format!("ctx{b}.hidden_states")];
        for (l, h) in batched.iter().enumerate() {
            let got = h.get(b).unwrap().narrow(0, 0, s.len()).unwrap();
            let d = max_abs(&(&got - &want.get(l).unwrap()).unwrap());
            worst = worst.max(d / max_abs(want));
        }
    }
    println!("padded batch vs golden: max relative |d| = {worst:.3e}");
    assert!(worst <= 1e-4);
}

/// Copy the tiny model folder's small files into `dir`.
fn copy_meta(dir: &Path) {
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(tiny_dir().join(f), dir.join(f)).unwrap();
    }
}

fn tiny_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(tiny_dir().join("model.safetensors"), &Device::Cpu).unwrap()
}

/// Sharded (model-0000X-of-00002 + index), without the `model.` prefix (LlamaModel layout):
/// same hidden states as the single prefixed file.
#[test]
fn sharded_unprefixed_checkpoint_loads() {
    let tmp = tempfile::tempdir().unwrap();
    copy_meta(tmp.path());
    let all = tiny_tensors();
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut map = serde_json::Map::new();
    for (k, v) in &all {
        let name = k.strip_prefix("model.").unwrap().to_string();
        let shard = if k.contains("layers.")
            && k.split('.').nth(2).unwrap().parse::<usize>().unwrap() >= 4
        {
            2
        } else {
            1
        };
        let file = format!("model-0000{shard}-of-00002.safetensors");
        map.insert(name.clone(), serde_json::Value::String(file));
        if shard == 1 {
            a.insert(name, v.clone())
        } else {
            b.insert(name, v.clone())
        };
    }
    candle_core::safetensors::save(&a, tmp.path().join("model-00001-of-00002.safetensors"))
        .unwrap();
    candle_core::safetensors::save(&b, tmp.path().join("model-00002-of-00002.safetensors"))
        .unwrap();
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let g = golden();
    let dec = Decoder::load(tmp.path(), &Device::Cpu, DType::F32).unwrap();
    let ids = ids_of(&g, 0);
    let got = Tensor::stack(&dec.hidden_states(&ids).unwrap(), 0).unwrap();
    let want = &g["ctx0.hidden_states"];
    assert!(max_abs(&(&got - want).unwrap()) <= 1e-4 * max_abs(want));

    // Remove a shard: the error names it.
    std::fs::remove_file(tmp.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = Decoder::load(tmp.path(), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model-00002-of-00002.safetensors") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn wrong_shape_names_tensor_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    copy_meta(tmp.path());
    let mut all = tiny_tensors();
    all.insert(
        "model.layers.3.mlp.down_proj.weight".into(),
        Tensor::zeros((64, 127), DType::BF16, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&all, tmp.path().join("model.safetensors")).unwrap();
    let err = Decoder::load(tmp.path(), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.layers.3.mlp.down_proj.weight")
            && err.contains("[64, 128]")
            && err.contains("[64, 127]"),
        "{err}"
    );
    assert!(err.contains("model.safetensors"), "{err}");

    all.remove("model.layers.3.mlp.down_proj.weight");
    candle_core::safetensors::save(&all, tmp.path().join("model.safetensors")).unwrap();
    let err = Decoder::load(tmp.path(), &Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.layers.3.mlp.down_proj.weight") && err.contains("missing"),
        "{err}"
    );
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn unsupported_model_type_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    copy_meta(tmp.path());
    std::fs::copy(
        tiny_dir().join("model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    edit_config(tmp.path(), |v| v["model_type"] = "mistral".into());
    let err = TextExtractor::load(tmp.path(), &Device::Cpu, TextOptions::default())
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("unsupported text model_type 'mistral'"),
        "{err}"
    );
    assert_eq!(err.exit_code(), tribe_bids::error::exit::MODEL_ERROR);
}

/// A tokenizer from another model: too many tokens for the embedding, or without the
/// model's end-of-text token.
#[test]
fn tokenizer_vocabulary_mismatch_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    copy_meta(tmp.path());
    std::fs::copy(
        tiny_dir().join("model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    edit_config(tmp.path(), |v| v["vocab_size"] = 32000.into());
    let err = TextExtractor::load(tmp.path(), &Device::Cpu, TextOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("tokenizer.json")
            && err.contains("128000 regular tokens")
            && err.contains("vocab_size 32000"),
        "{err}"
    );

    copy_meta(tmp.path());
    let small = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "hello": 1, "world": 2}, "unk_token": "[UNK]"}
    });
    std::fs::write(tmp.path().join("tokenizer.json"), small.to_string()).unwrap();
    let err = TextExtractor::load(tmp.path(), &Device::Cpu, TextOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no token with id 128001"), "{err}");
}

/// Qwen3 (the tribev2-mini text model's family): per-head q/k RMSNorm, explicit head_dim
/// (32, not hidden/heads = 16), transformers-5 `rope_parameters`, keys without "model.".
/// Golden: transformers 5.24.0 Qwen3Model (tests/fixtures/hf/make_qwen3_tiny.py).
#[test]
fn qwen3_hidden_states_match_transformers() {
    let g =
        candle_core::safetensors::load(fixture("hf/qwen3-tiny-golden.safetensors"), &Device::Cpu)
            .unwrap();
    let dec = Decoder::load(&fixture("models-tiny/Qwen3-tiny"), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(dec.n_hidden_states(), 4);
    for i in 0..3 {
        let ids = g[&format!("case{i}.input_ids")]
            .to_dtype(DType::U32)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        let want = &g[&format!("case{i}.hidden_states")];
        let got = Tensor::stack(&dec.hidden_states(&ids).unwrap(), 0).unwrap();
        let (diff, scale) = (max_abs(&(&got - want).unwrap()), max_abs(want));
        println!(
            "qwen3 case{i}: {} tokens, max|d| = {diff:.3e}, max|expected| = {scale:.3}",
            ids.len()
        );
        assert!(diff <= 1e-4 * scale, "case{i}: {diff} > 1e-4 * {scale}");
    }
}

/// The bf16 path (what `dtype="auto"` runs for this bf16 checkpoint; GPUs use it) against
/// transformers' bf16 hidden states. bf16 rounding differs with the order of operations, so
/// the bound is the documented bf16-vs-f32 gap of these goldens (0.125, hf/README.md), twice;
/// a wrong bf16 path (e.g. an unconverted weight) is off by whole units.
#[test]
fn bf16_path_is_close_to_transformers_bf16() {
    let g = golden();
    let dec = Decoder::load(&tiny_dir(), &Device::Cpu, DType::BF16).unwrap();
    for i in 0..4 {
        let ids = ids_of(&g, i);
        let want = g[&format!("ctx{i}.hidden_states_bf16_auto")]
            .to_dtype(DType::F32)
            .unwrap();
        let got = Tensor::stack(&dec.hidden_states(&ids).unwrap(), 0).unwrap();
        let diff = max_abs(&(&got - &want).unwrap());
        println!(
            "bf16 ctx{i}: max|d| = {diff:.3e} (max|expected| {:.3})",
            max_abs(&want)
        );
        assert!(diff <= 0.25, "ctx{i}: {diff}");
    }
}
