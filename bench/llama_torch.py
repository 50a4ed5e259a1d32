"""PyTorch reference timing for benches/llama.rs: the same full-width Llama-3.2-3B decoder
layers (hidden 3072, 24 heads, 8 KV heads, head_dim 128, FFN 8192, llama3 rope), random
weights, f32, CPU, one unpadded sequence, every hidden state returned.

--impl hf (default when transformers imports): transformers' own LlamaModel, sdpa attention,
output_hidden_states=True, use_cache=False -- exactly what neuralset runs.
--impl plain: the same operations written in plain torch (for a venv without transformers).
Prints progress lines starting with '#' and one JSON line.

Usage: python bench/llama_torch.py [--layers 4] [--tokens 512,1400] [--reps 2] [--threads N]
"""

import argparse
import json
import math
import resource
import time

import torch
import torch.nn.functional as F

D, FFN, H, KV, HD = 3072, 8192, 24, 8, 128
ROPE = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192, "rope_type": "llama3"}


def hf_model(layers):
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(vocab_size=32000, hidden_size=D, intermediate_size=FFN, num_hidden_layers=layers,
                      num_attention_heads=H, num_key_value_heads=KV, head_dim=HD, rms_norm_eps=1e-5,
                      rope_theta=500000.0, rope_scaling=dict(ROPE), max_position_embeddings=131072,
                      tie_word_embeddings=True, attn_implementation="sdpa")
    model = LlamaModel(cfg).eval()

    def forward(ids):
        return model(ids[None], output_hidden_states=True, use_cache=False).hidden_states

    return forward


def inv_freq_llama3(dim=HD, base=500000.0, factor=32.0, low=1.0, high=4.0, old=8192):
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / high) * ~(wavelen > old / low)
    return torch.where(medium, smoothed, scaled)


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        lin = lambda o, i: torch.nn.Linear(i, o, bias=False)
        self.q, self.k, self.v, self.o = lin(H * HD, D), lin(KV * HD, D), lin(KV * HD, D), lin(D, H * HD)
        self.gate, self.up, self.down = lin(FFN, D), lin(FFN, D), lin(D, FFN)
        self.n1 = torch.nn.Parameter(torch.ones(D))
        self.n2 = torch.nn.Parameter(torch.ones(D))

    @staticmethod
    def rms(x, w, eps=1e-5):
        v = x.pow(2).mean(-1, keepdim=True)
        return w * (x * torch.rsqrt(v + eps))

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        h = self.rms(x, self.n1)
        q = self.q(h).view(b, t, H, HD).transpose(1, 2)
        k = self.k(h).view(b, t, KV, HD).transpose(1, 2)
        v = self.v(h).view(b, t, KV, HD).transpose(1, 2)
        rot = lambda z: torch.cat((-z[..., HD // 2 :], z[..., : HD // 2]), -1)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, H * HD))
        h = self.rms(x, self.n2)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def plain_model(layers):
    mods = torch.nn.ModuleList([Layer() for _ in range(layers)]).eval()
    norm = torch.ones(D)
    embed = torch.randn(32000, D) * 0.5
    inv = inv_freq_llama3()

    def forward(ids):
        pos = torch.arange(len(ids)).float()
        freqs = pos[:, None] * inv[None, :]
        emb = torch.cat((freqs, freqs), -1)
        cos, sin = emb.cos(), emb.sin()
        x = embed[ids][None]
        hidden = [x]
        for i, layer in enumerate(mods):
            x = layer(x, cos, sin)
            hidden.append(Layer.rms(x, norm) if i == len(mods) - 1 else x)
        return hidden

    return forward


def gemm_alone(tokens, reps):
    """The four products of a Llama-3.2-3B layer alone, same shapes and names as benches/llama.rs."""
    shapes = [("qkv", 3072, 5120), ("o", 3072, 3072), ("gate_up", 3072, 16384), ("down", 8192, 3072)]
    with torch.inference_mode():
        for m in tokens:
            for name, k, n in shapes:
                x, w = torch.randn(m, k), torch.randn(n, k) * 0.02
                torch.nn.functional.linear(x, w)
                best = float("inf")
                for _ in range(reps):
                    t0 = time.perf_counter()
                    torch.nn.functional.linear(x, w)
                    best = min(best, time.perf_counter() - t0)
                print(f"gemm {name} m={m} k={k} n={n}: {best * 1e3:.1f} ms, {2 * m * k * n / best / 1e9:.1f} GFLOP/s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--tokens", default="512,1400")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--impl", choices=["hf", "plain", "auto"], default="auto")
    ap.add_argument("--gemm", action="store_true",
                    help="time only the layer's four products (F.linear), as TRIBE_BENCH_GEMM=1 does on our side")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.gemm:
        gemm_alone([int(s) for s in a.tokens.split(",")], max(a.reps, 3))
        return
    impl = a.impl
    if impl == "auto":
        try:
            import transformers  # noqa: F401
            impl = "hf"
        except ImportError:
            impl = "plain"
    torch.manual_seed(0)
    forward = hf_model(a.layers) if impl == "hf" else plain_model(a.layers)
    rows = []
    with torch.inference_mode():
        for n in [int(s) for s in a.tokens.split(",")]:
            ids = (torch.arange(n) * 7919 + 13) % 32000

            def run():
                t0, c0 = time.perf_counter(), time.process_time()
                forward(ids)
                return time.perf_counter() - t0, time.process_time() - c0

            run()
            best, cpu = min(run() for _ in range(a.reps))
            tps = n / best
            rows.append({"tokens": n, "seconds": best, "cpu_seconds": cpu, "tokens_per_s": tps,
                         "tokens_per_s_28_layers": tps * a.layers / 28})
            print(f"# torch ({impl}) T={n}: {best:.3f} s ({cpu:.2f} CPU-s) for {a.layers} layers = {tps:.0f} tokens/s",
                  flush=True)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"torch": torch.__version__, "impl": impl, "threads": torch.get_num_threads(),
                      "layers_timed": a.layers, "full_width": rows, "peak_rss_kb": peak_kb}))


if __name__ == "__main__":
    main()
