#!/usr/bin/env python3
"""PyTorch baseline for the Wav2Vec2-BERT benchmark (benches/w2vbert.rs).

Builds transformers' own `Wav2Vec2BertModel` with the facebook/w2v-bert-2.0 shape (hidden 1024,
16 heads, FFN 4096, depthwise kernel 31, relative_key positions -64..+8) but only `--layers`
conformer layers and random weights, times a forward pass on `--seconds` of input features
(50 frames per second, as the 2-frame-stacked filterbank gives), and writes everything the Rust
benchmark needs to run the identical computation:

  OUT/config.json, OUT/model.safetensors, OUT/preprocessor_config.json   (an HF model folder)
  OUT/input.safetensors        input_features (T', 160) and torch's hidden_states[-1] (T', 1024)
  OUT/torch.json               timings, threads, peak RSS

Prints one JSON line. Real-time factor for the full 24-layer model = (per-layer seconds * 24
+ projection) / audio seconds; the per-layer cost is the same for every layer.
"""

import argparse
import json
import os
import resource
import time

import torch
from safetensors.torch import save_file
from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/w2vbert_bench")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = Wav2Vec2BertConfig(
        hidden_size=1024,
        num_hidden_layers=args.layers,
        num_attention_heads=16,
        intermediate_size=4096,
        feature_projection_input_dim=160,
        conv_depthwise_kernel_size=31,
        position_embeddings_type="relative_key",
        left_max_position_embeddings=64,
        right_max_position_embeddings=8,
        hidden_act="swish",
        layer_norm_eps=1e-5,
        add_adapter=False,
    )
    model = Wav2Vec2BertModel(cfg).eval()
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    with open(os.path.join(args.out, "preprocessor_config.json"), "w") as f:
        json.dump({"feature_extractor_type": "SeamlessM4TFeatureExtractor", "feature_size": 80, "num_mel_bins": 80,
                   "padding_value": 1, "sampling_rate": 16000, "stride": 2}, f)

    frames = int(args.seconds * 50) - 1  # 60 s -> 2999, as the reference's filterbank gives
    x = torch.randn(1, frames, 160)
    with torch.no_grad():
        model(x, output_hidden_states=True)  # warm-up
        times, cpu = [], []
        for _ in range(args.runs):
            t0, c0 = time.perf_counter(), time.process_time()
            out = model(x, output_hidden_states=True)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    last = out.hidden_states[-1][0].contiguous()
    save_file({"input_features": x[0].contiguous(), "last_hidden_state": last}, os.path.join(args.out, "input.safetensors"))

    best = min(times)
    per_layer = best / args.layers
    result = {
        "impl": "torch " + torch.__version__ + " transformers Wav2Vec2BertModel",
        "threads": torch.get_num_threads(),
        "layers_run": args.layers,
        "frames": frames,
        "audio_seconds": args.seconds,
        "forward_seconds": best,
        "forward_cpu_seconds": min(cpu),
        "per_layer_seconds": per_layer,
        "full_model_seconds_est": per_layer * 24,
        "realtime_factor_full_model": args.seconds / (per_layer * 24),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    with open(os.path.join(args.out, "torch.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
