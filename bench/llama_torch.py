"""PyTorch reference timing for benches/llama.rs: the same full-width Llama-3.2-3B decoder
layers (hidden 3072, 24 heads, 8 KV heads, head_dim 128, FFN 8192, llama3 rope), random
weights, f32, CPU, one unpadded sequence, returning every hidden state.

transformers is not installed in the bench venv, so the layer is written in plain torch with
exactly the operations transformers' LlamaModel (sdpa attention) runs: RMSNorm, q/k/v
projections, rotate-half RoPE, F.scaled_dot_product_attention with GQA and a causal mask,
o_proj, SiLU-gated MLP. Prints one JSON line.

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--tokens", default="512,1400")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    layers = torch.nn.ModuleList([Layer() for _ in range(a.layers)]).eval()
    norm = torch.ones(D)
    embed = torch.randn(32000, D) * 0.5
    inv = inv_freq_llama3()
    rows = []
    with torch.inference_mode():
        for n in [int(s) for s in a.tokens.split(",")]:
            ids = (torch.arange(n) * 7919 + 13) % 32000
            pos = torch.arange(n).float()
            freqs = pos[:, None] * inv[None, :]
            emb = torch.cat((freqs, freqs), -1)
            cos, sin = emb.cos(), emb.sin()

            def run():
                t0 = time.perf_counter()
                x = embed[ids][None]
                hidden = [x]
                for i, layer in enumerate(layers):
                    x = layer(x, cos, sin)
                    hidden.append(Layer.rms(x, norm) if i == len(layers) - 1 else x)
                return time.perf_counter() - t0

            run()
            best = min(run() for _ in range(a.reps))
            tps = n / best
            rows.append({"tokens": n, "seconds": best, "tokens_per_s": tps, "tokens_per_s_28_layers": tps * a.layers / 28})
            print(f"# torch T={n}: {best:.3f} s for {a.layers} layers = {tps:.0f} tokens/s", flush=True)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "layers_timed": a.layers,
                      "full_width": rows, "peak_rss_kb": peak_kb}))


if __name__ == "__main__":
    main()
