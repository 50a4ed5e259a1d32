//! V-JEPA2 ViT-g throughput and frame preparation throughput (run: `bench/compare_vjepa2.sh`).
//!
//! `cargo bench --bench vjepa2 -- layers [N] [REPS]`: full-width ViT-g layers (hidden 1408,
//! 16 heads, MLP 6144, one 64-frame 256x256 clip = 8,192 tokens) with random weights. Times the
//! patch embedding and N layers (default 2), then scales to the released 40 layers.
//!
//! `cargo bench --bench vjepa2 -- frames FILE`: decoding plus preprocessing of a video the way
//! the extractor does it (every frame decoded once, the 16 fps clip frames converted, resized
//! and cropped, every 0.5 s bin's 64-frame clip assembled), in frames per second of video.
//!
//! Prints `key=value` lines that bench/compare_vjepa2.sh collects. Peak RSS is VmHWM.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use tribe_bids::features::video::frames::{ClipAssembler, VideoChunk, plan_video_clips};
use tribe_bids::features::video::processor::ProcessorConfig;
use tribe_bids::features::video::vjepa2::{Vjepa2Config, Vjepa2Encoder};
use tribe_bids::stimulus::chunks;
use tribe_bids::stimulus::video::VideoInfo;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU seconds used by this process so far (user + system), from /proc/self/stat. On a
/// machine shared with other work, CPU seconds are steadier than wall seconds.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn vitg(layers: usize) -> Vjepa2Config {
    serde_json::from_value(serde_json::json!({
        "model_type": "vjepa2", "hidden_size": 1408, "num_hidden_layers": layers,
        "num_attention_heads": 16, "mlp_ratio": 6144.0 / 1408.0, "patch_size": 16,
        "tubelet_size": 2, "crop_size": 256, "frames_per_clip": 64, "hidden_act": "gelu",
    }))
    .unwrap()
}

fn bench_layers(n_layers: usize, reps: usize) {
    let cfg = vitg(n_layers);
    assert_eq!(cfg.mlp_hidden(), 6144);
    let enc = Vjepa2Encoder::random(cfg, &Device::Cpu, DType::F32, 7).unwrap();
    let clip = Tensor::randn(0f32, 1f32, (64, 3, 256, 256), &Device::Cpu).unwrap();
    let mut embed = vec![];
    let mut layer = vec![];
    let mut layer_cpu = vec![];
    for _ in 0..reps {
        let mut marks = vec![(Instant::now(), cpu_s())];
        enc.forward_visit(&clip, |_, _| {
            marks.push((Instant::now(), cpu_s()));
            Ok(())
        })
        .unwrap();
        embed.push((marks[1].0 - marks[0].0).as_secs_f64());
        for w in marks[1..].windows(2) {
            layer.push((w[1].0 - w[0].0).as_secs_f64());
            layer_cpu.push(w[1].1 - w[0].1);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (e, l, lc) = (med(&mut embed), med(&mut layer), med(&mut layer_cpu));
    let clip_s = e + 40.0 * l;
    println!("threads={}", rayon::current_num_threads());
    println!("candle_embed_s={e:.3}");
    println!("candle_layer_s={l:.3}");
    println!("candle_layer_cpu_s={lc:.2}");
    println!("candle_clip40_s={clip_s:.1}");
    println!("candle_clips_per_s={:.5}", 1.0 / clip_s);
    println!("candle_peak_rss_mb={:.0}", peak_rss_mb());
}

fn bench_frames(path: &str) {
    let t0 = Instant::now();
    let info = VideoInfo::open(std::path::Path::new(path)).unwrap();
    let probe_s = t0.elapsed().as_secs_f64();
    let processor = ProcessorConfig::for_crop(256);
    let chunks: Vec<VideoChunk> =
        chunks::chunk(info.duration, chunks::MAX_CHUNK_S, chunks::MIN_CHUNK_S)
            .into_iter()
            .map(|c| VideoChunk {
                start: c.offset,
                offset: c.offset,
                duration: c.duration,
            })
            .collect();
    let t1 = Instant::now();
    let jobs = plan_video_clips(&info, &chunks, 64, 4.0, 0.0, info.duration).unwrap();
    let plan_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let mut asm = ClipAssembler::new(&info, &jobs, &processor);
    let mut clips = 0;
    while let Some((_, clip)) = asm.next_clip().unwrap() {
        std::hint::black_box(&clip);
        clips += 1;
    }
    let run_s = t2.elapsed().as_secs_f64();
    let st = asm.into_stats().unwrap();
    let total = probe_s + plan_s + run_s;
    println!("threads={}", rayon::current_num_threads());
    println!(
        "video={}x{} frames={} duration_s={:.2}",
        info.width,
        info.height,
        info.n_frames(),
        info.duration
    );
    println!("ours_probe_s={probe_s:.3} ours_plan_s={plan_s:.3} ours_decode_prep_s={run_s:.3}");
    println!(
        "ours_frames_decoded={} ours_frames_preprocessed={} ours_clips={clips} ours_max_buffered={}",
        st.frames_decoded, st.frames_preprocessed, st.max_buffered_frames
    );
    println!("ours_fps={:.1}", st.frames_decoded as f64 / total);
    println!("ours_x_realtime={:.2}", info.duration / total);
    println!("ours_peak_rss_mb={:.0}", peak_rss_mb());
}

/// Where a layer's time goes: the candle operations of one ViT-g layer, timed one by one.
fn bench_ops() {
    let dev = Device::Cpu;
    let t = |name: &str, f: &mut dyn FnMut() -> Tensor| {
        let _ = f();
        let (s, c) = (Instant::now(), cpu_s());
        let out = f();
        std::hint::black_box(out);
        println!(
            "op_{name}_s={:.3} cpu_s={:.2}",
            s.elapsed().as_secs_f64(),
            cpu_s() - c
        );
    };
    let x = Tensor::randn(0f32, 1f32, (8192, 1408), &dev).unwrap();
    let w_qkv = Tensor::randn(0f32, 0.03f32, (4224, 1408), &dev).unwrap();
    let w1 = Tensor::randn(0f32, 0.03f32, (6144, 1408), &dev).unwrap();
    let h = Tensor::randn(0f32, 1f32, (8192, 6144), &dev).unwrap();
    // Attention as the encoder runs it: per head, blocks of 512 queries (256 blocks a layer).
    let q = Tensor::randn(0f32, 1f32, (512, 88), &dev).unwrap();
    let kt = Tensor::randn(0f32, 1f32, (88, 8192), &dev).unwrap();
    let v = Tensor::randn(0f32, 1f32, (8192, 88), &dev).unwrap();
    let sc = q.matmul(&kt).unwrap();
    let p = candle_nn::ops::softmax_last_dim(&sc).unwrap();
    t("qkv_matmul", &mut || x.matmul(&w_qkv.t().unwrap()).unwrap());
    t("fc1_matmul", &mut || x.matmul(&w1.t().unwrap()).unwrap());
    t("gelu_erf_8192x6144", &mut || h.gelu_erf().unwrap());
    t("gelu_fast_8192x6144", &mut || {
        tribe_bids::features::video::fastmath::gelu_erf(&h).unwrap()
    });
    let reps = |f: &mut dyn FnMut() -> Tensor| -> Tensor {
        for _ in 0..255 {
            std::hint::black_box(f());
        }
        f()
    };
    t("layer_scores_x256", &mut || {
        reps(&mut || q.matmul(&kt).unwrap())
    });
    t("layer_softmax_candle_x256", &mut || {
        reps(&mut || candle_nn::ops::softmax_last_dim(&sc).unwrap())
    });
    t("layer_softmax_fast_x256", &mut || {
        reps(&mut || tribe_bids::features::video::fastmath::softmax_last_dim(&sc).unwrap())
    });
    t("layer_pv_x256", &mut || reps(&mut || p.matmul(&v).unwrap()));
    // The whole layer's attention as the CPU f32 path runs it (the fused kernel).
    let (qa, ka, va) = (
        Tensor::randn(0f32, 1f32, (16, 8192, 88), &dev).unwrap(),
        Tensor::randn(0f32, 1f32, (16, 8192, 88), &dev).unwrap(),
        Tensor::randn(0f32, 1f32, (16, 8192, 88), &dev).unwrap(),
    );
    let flat = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (qa, ka, va) = (flat(&qa), flat(&ka), flat(&va));
    for block in [256, 512, 1024, 2048] {
        t(&format!("layer_attention_fused_block{block}"), &mut || {
            let o = tribe_bids::features::attention::gqa_attention(
                &qa,
                &ka,
                &va,
                16,
                16,
                8192,
                88,
                8192,
                block,
                tribe_bids::features::attention::Mask::Full,
            );
            Tensor::from_vec(o, (8192, 1408), &dev).unwrap()
        });
    }
    let w2 = Tensor::randn(0f32, 0.03f32, (1408, 6144), &dev).unwrap();
    t("fc2_matmul", &mut || h.matmul(&w2.t().unwrap()).unwrap());
    // The weight stored (in, out) as the text model keeps it: the same speed in `gemm`.
    let w1t = w1.t().unwrap().contiguous().unwrap();
    t("fc1_matmul_pretransposed", &mut || x.matmul(&w1t).unwrap());
}

/// One ViT-g layer's attention (16 heads, 8,192 tokens, head_dim 88): the fused kernel with
/// 512-query blocks against the key-tiled online softmax. TRIBE_BENCH_QB / TRIBE_BENCH_KB set
/// the tiled block sizes.
fn bench_attention() {
    use tribe_bids::features::attention::{Mask, full_attention_tiled, gqa_attention};
    let (h, n, hd) = (16, 8192, 88);
    let env = |k: &str, d: usize| -> usize {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (qb, kb) = (env("TRIBE_BENCH_QB", 512), env("TRIBE_BENCH_KB", 512));
    let make = |seed: u32| -> Vec<f32> {
        (0..h * n * hd)
            .map(|i| {
                ((((i as u32).wrapping_mul(2654435761) ^ seed) % 2000) as f32 / 1000.0 - 1.0) * 2.0
            })
            .collect()
    };
    let (q, k, v) = (make(1), make(2), make(3));
    for round in 0..2 {
        let (s, c) = (Instant::now(), cpu_s());
        let a = gqa_attention(&q, &k, &v, h, h, n, hd, n, 512, Mask::Full);
        println!(
            "attn_fused_s={:.3} cpu_s={:.2} (round {round})",
            s.elapsed().as_secs_f64(),
            cpu_s() - c
        );
        let (s, c) = (Instant::now(), cpu_s());
        let b = full_attention_tiled(&q, &k, &v, h, h, n, hd, n, qb, kb);
        println!(
            "attn_tiled_s={:.3} cpu_s={:.2} qb={qb} kb={kb}",
            s.elapsed().as_secs_f64(),
            cpu_s() - c
        );
        let d = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let m = a.iter().map(|x| x.abs()).fold(0f32, f32::max);
        println!("attn_max_abs_diff={d:.3e} max_abs={m:.3e}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("layers") => {
            let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
            let reps = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
            bench_layers(n, reps);
        }
        Some("frames") => bench_frames(args.get(1).expect("frames FILE")),
        Some("ops") => bench_ops(),
        Some("attn") => bench_attention(),
        _ => eprintln!("usage: vjepa2 layers [N] [REPS] | frames FILE"),
    }
}
