#!/usr/bin/env python3
"""PyTorch CPU reference timing for the TRIBE v2 brain model at the released size.

Runs the same shapes as benches/brain_model.rs (hidden 1152, 8 layers, 8 heads, low-rank 2048,
20,484 outputs, T = 200), on the weights the Rust bench wrote (BENCH_DIR/model.safetensors), with
the same thread count, and checks its prediction against the candle one (window.safetensors).

The forward is SPEC §1-3 written in plain torch ops the way the reference modules compute it
(nn.Linear projectors, x_transformers pre-norm ScaleNorm blocks with half-split partial rotary,
einsum subject-layers head in (B, C, T) layout, AdaptiveAvgPool1d), because x_transformers is not
installed in this venv. SPEC.md records that such a re-implementation matches the real
FmriEncoderModel within 7.5e-7.

On a GPU (`--device cuda`, `--dtype f32|bf16`; scripts/gpu-check.sh) the weights go to the
device in that dtype with the precision choices of the Rust bf16 mode (ScaleNorm, softmax and
the output pooling in f32, rotary frequencies in f32), each timed forward ends with
torch.cuda.synchronize(), and the median over the reps is reported; the prediction is compared
with the Rust GPU one of the same dtype (`prediction` / `prediction_bf16` in window.safetensors).
TF32 stays off (torch's default for matmul), as in candle.

Usage: torch_reference.py DIR [--threads N] [--reps R] [--device cpu|cuda] [--dtype f32|bf16]
(prints one JSON line last)
"""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

MODALITIES = ["text", "audio", "video"]


def scale_norm(x, g):
    # In f32 whatever x's dtype (a no-op in f32 mode), as the Rust model does.
    return (F.normalize(x.float(), dim=-1) * (x.shape[-1] ** 0.5) * g.float()).to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def forward(w, feats, depth, heads, n_steps):
    xs = []
    b, t = None, None
    for m in MODALITIES:
        if m in feats:
            b, t = feats[m].shape[0], feats[m].shape[-1]
    dt = w["projectors.text.weight"].dtype
    dev = w["projectors.text.weight"].device
    for m in MODALITIES:
        wm = w[f"projectors.{m}.weight"]
        if m not in feats:
            xs.append(torch.zeros(b, t, wm.shape[0], dtype=dt, device=dev))
            continue
        x = feats[m].to(dt)
        x = x.reshape(b, -1, t).transpose(1, 2)  # b l d t -> b (l d) t -> b t (l d)
        xs.append(F.linear(x, wm, w[f"projectors.{m}.bias"]))
    x = torch.cat(xs, dim=-1)
    x = x + w["time_pos_embed"][:, :t]
    dim = x.shape[-1]
    dh = dim // heads
    inv_freq = w["encoder.rotary_pos_emb.inv_freq"]
    rd = inv_freq.shape[0] * 2
    freqs = torch.einsum("i,j->ij", torch.arange(t, dtype=torch.float32, device=dev), inv_freq)
    freqs = torch.cat((freqs, freqs), dim=-1)
    cos, sin = freqs.cos().to(dt), freqs.sin().to(dt)
    for i in range(depth):
        a, f = 2 * i, 2 * i + 1
        h = scale_norm(x, w[f"encoder.layers.{a}.0.0.g"])
        q, k, v = (F.linear(h, w[f"encoder.layers.{a}.1.{n}.weight"]) for n in ("to_q", "to_k", "to_v"))
        q, k, v = (z.reshape(b, t, heads, dh).transpose(1, 2) for z in (q, k, v))

        def rot(z):
            zr, zp = z[..., :rd], z[..., rd:]
            return torch.cat((zr * cos + rotate_half(zr) * sin, zp), dim=-1)

        q, k = rot(q), rot(k)
        s = torch.einsum("bhid,bhjd->bhij", q, k) * dh**-0.5
        p = s.softmax(dim=-1, dtype=torch.float32).to(v.dtype)
        o = torch.einsum("bhij,bhjd->bhid", p, v).transpose(1, 2).reshape(b, t, dim)
        x = F.linear(o, w[f"encoder.layers.{a}.1.to_out.weight"]) + x * w[f"encoder.layers.{a}.2.residual_scale"]
        h = scale_norm(x, w[f"encoder.layers.{f}.0.0.g"])
        h = F.gelu(F.linear(h, w[f"encoder.layers.{f}.1.ff.0.0.weight"], w[f"encoder.layers.{f}.1.ff.0.0.bias"]))
        h = F.linear(h, w[f"encoder.layers.{f}.1.ff.2.weight"], w[f"encoder.layers.{f}.1.ff.2.bias"])
        x = h + x * w[f"encoder.layers.{f}.2.residual_scale"]
    x = scale_norm(x, w["encoder.final_norm.g"])
    x = x.transpose(1, 2)  # B, H, T
    x = F.linear(x.transpose(1, 2), w["low_rank_head.weight"]).transpose(1, 2)
    out = torch.einsum("bct,cd->bdt", x, w["predictor.weights"][0])
    out = out + w["predictor.bias"][0].view(1, -1, 1)
    return F.adaptive_avg_pool1d(out.float(), n_steps)


# Tensors kept in f32 in bf16 mode (see the module doc).
KEEP_F32 = ("encoder.rotary_pos_emb.inv_freq", ".0.0.g", "encoder.final_norm.g")


def main_gpu(args):
    dev = torch.device(args.device)
    dt = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    w = load_file(f"{args.dir}/model.safetensors")
    w = {k: v.to(dev, torch.float32 if k.endswith(KEEP_F32) else dt) for k, v in w.items()}
    win = load_file(f"{args.dir}/window.safetensors")
    feats = {m: win[m].to(dev) for m in MODALITIES if m in win}
    depth = sum(1 for k in w if k.endswith(".1.to_q.weight"))
    ref_key = "prediction" if args.dtype == "f32" else f"prediction_{args.dtype}"
    n_steps = win["prediction"].shape[-1]
    with torch.inference_mode():
        for _ in range(3):
            y = forward(w, feats, depth, 8, n_steps)
        torch.cuda.synchronize()
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            forward(w, feats, depth, 8, n_steps)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    times.sort()
    y = y.float().cpu()
    exact = win["prediction"]
    ymax = exact.abs().max().item()
    out = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(dev),
        "dtype": args.dtype,
        "ms_median": times[len(times) // 2] * 1e3,
        "ms_min": times[0] * 1e3,
        "max_abs_diff_vs_candle_same_dtype": (
            (y - win[ref_key]).abs().max().item() if ref_key in win else None
        ),
        "max_abs_diff_vs_candle_f32": (y - exact).abs().max().item(),
        "parity_bound_f32": 1e-5 * ymax + 1e-6,
        "max_abs_expected": ymax,
    }
    print(f"PyTorch {torch.__version__} on {out['device']} {args.dtype}: {out['ms_median']:.2f} ms per window "
          f"median ({out['ms_min']:.2f} min); max|torch - candle {args.dtype}| = "
          f"{out['max_abs_diff_vs_candle_same_dtype']}; max|torch - candle f32| = "
          f"{out['max_abs_diff_vs_candle_f32']:.2e} (f32 bound {out['parity_bound_f32']:.2e})")
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    args = ap.parse_args()
    if args.device != "cpu":
        return main_gpu(args)
    if args.dtype != "f32":
        ap.error("--dtype bf16 is for --device cuda (the CPU reference is f32)")
    torch.set_num_threads(args.threads)
    w = load_file(f"{args.dir}/model.safetensors")
    win = load_file(f"{args.dir}/window.safetensors")
    feats = {m: win[m] for m in MODALITIES if m in win}
    depth = sum(1 for k in w if k.endswith(".1.to_q.weight"))
    heads = 8
    n_steps = win["prediction"].shape[-1]
    with torch.inference_mode():
        y = forward(w, feats, depth, heads, n_steps)  # warm-up
        best = math.inf
        c0 = time.process_time()
        for _ in range(args.reps):
            t0 = time.perf_counter()
            forward(w, feats, depth, heads, n_steps)
            best = min(best, time.perf_counter() - t0)
        cpu = (time.process_time() - c0) / args.reps
        # GEMM peak with the same threads, same shape as the Rust bench.
        a, bm = torch.randn(1024, 2048), torch.randn(2048, 4096)
        a @ bm
        g = math.inf
        for _ in range(4):
            t0 = time.perf_counter()
            a @ bm
            g = min(g, time.perf_counter() - t0)
    ref = win["prediction"]
    d = (y - ref).abs().max().item()
    bound = 1e-5 * ref.abs().max().item() + 1e-6
    out = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "ms_per_window": best * 1e3,
        "cpu_ms_per_window": cpu * 1e3,
        "gemm_peak_gflops": 2 * 1024 * 2048 * 4096 / g / 1e9,
        "max_abs_diff_vs_candle": d,
        "parity_bound": bound,
    }
    print(f"PyTorch {torch.__version__} ({out['threads']} threads): {best * 1e3:.1f} ms per window "
          f"({cpu * 1e3:.0f} CPU-ms); "
          f"GEMM peak {out['gemm_peak_gflops']:.1f} GFLOP/s; max|torch - candle| = {d:.2e} (bound {bound:.2e})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
