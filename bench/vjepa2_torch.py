"""PyTorch reference timing for V-JEPA2 ViT-g layers (companion of benches/vjepa2.rs).

The encoder layer is written here from the same description as the candle port (transformers'
VJEPA2 encoder: pre-LayerNorm blocks, fused-free q/k/v projections, 3-D rotary embedding on
three 28-dim slices of each 88-dim head, scaled-dot-product attention as transformers 5 runs it
by default (sdpa), exact-erf GELU MLP). transformers itself is not needed. Random weights,
float32, one 64-frame 256x256 clip = 8,192 tokens; same shapes and FLOPs as the real model.

usage: python bench/vjepa2_torch.py [N_LAYERS] [REPS] [THREADS]
env:   DEVICE (cpu | cuda, default cpu), DTYPE (f32 | bf16, default f32): on CUDA, the figure to set
       beside benches/gpu_media.rs (scripts/gpu-check-media.sh)
Prints key=value lines; peak RSS is ru_maxrss.
"""
import resource
import os
import sys
import time

import torch
import torch.nn.functional as F

HIDDEN, HEADS, MLP, PATCH, TUBELET, CROP, FRAMES = 1408, 16, 6144, 16, 2, 256, 64


def rope_tables(n_tokens, head_dim, grid):
    sd = 2 * ((head_dim // 3) // 2)
    half = sd // 2
    ids = torch.arange(n_tokens)
    per_frame = grid * grid
    f = ids // per_frame
    r = (ids - f * per_frame) // grid
    c = ids - f * per_frame - r * grid
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float32) / half)
    cos = torch.ones(n_tokens, head_dim)
    sin = torch.zeros(n_tokens, head_dim)
    for axis, pos in enumerate((f, r, c)):
        ang = pos[:, None].float() * omega[None, :]
        ang = ang.repeat(1, 2)  # element i uses omega[i % half], as the reference
        cos[:, axis * sd:(axis + 1) * sd] = ang.cos()
        sin[:, axis * sd:(axis + 1) * sd] = ang.sin()
    return cos, sin


def rotate(x, cos, sin):
    pairs = x.unflatten(-1, (-1, 2))
    rot = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + rot * sin


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(HIDDEN, eps=1e-6)
        self.query = torch.nn.Linear(HIDDEN, HIDDEN)
        self.key = torch.nn.Linear(HIDDEN, HIDDEN)
        self.value = torch.nn.Linear(HIDDEN, HIDDEN)
        self.proj = torch.nn.Linear(HIDDEN, HIDDEN)
        self.norm2 = torch.nn.LayerNorm(HIDDEN, eps=1e-6)
        self.fc1 = torch.nn.Linear(HIDDEN, MLP)
        self.fc2 = torch.nn.Linear(MLP, HIDDEN)

    def forward(self, x, cos, sin):
        b, n, _ = x.shape
        hd = HIDDEN // HEADS
        a = self.norm1(x)
        q = self.query(a).view(b, n, HEADS, hd).transpose(1, 2)
        k = self.key(a).view(b, n, HEADS, hd).transpose(1, 2)
        v = self.value(a).view(b, n, HEADS, hd).transpose(1, 2)
        k = rotate(k, cos, sin)
        q = rotate(q, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, scale=hd ** -0.5)
        x = self.proj(o.transpose(1, 2).reshape(b, n, HIDDEN)) + x
        return self.fc2(F.gelu(self.fc1(self.norm2(x)))) + x


def main():
    n_layers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(7)
    embed = torch.nn.Conv3d(3, HIDDEN, (TUBELET, PATCH, PATCH), stride=(TUBELET, PATCH, PATCH))
    layers = torch.nn.ModuleList(Layer() for _ in range(n_layers))
    clip = torch.randn(1, FRAMES, 3, CROP, CROP)
    n = (FRAMES // TUBELET) * (CROP // PATCH) ** 2
    cos, sin = rope_tables(n, HIDDEN // HEADS, CROP // PATCH)
    dev = torch.device(os.environ.get("DEVICE", "cpu"))
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[os.environ.get("DTYPE", "f32")]
    embed, layers = embed.to(dev, dtype), layers.to(dev, dtype)
    clip, cos, sin = clip.to(dev, dtype), cos.to(dev, dtype), sin.to(dev, dtype)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()
    t_embed, t_layer, c_layer = [], [], []
    with torch.inference_mode():
        for _ in range(reps):
            t0 = time.perf_counter()
            h = embed(clip.permute(0, 2, 1, 3, 4)).flatten(2).transpose(1, 2)
            sync()
            t1 = time.perf_counter()
            t_embed.append(t1 - t0)
            for layer in layers:
                t0, c0 = time.perf_counter(), time.process_time()
                h = layer(h, cos, sin)
                sync()
                t_layer.append(time.perf_counter() - t0)
                c_layer.append(time.process_time() - c0)
    t_embed.sort()
    t_layer.sort()
    c_layer.sort()
    e, l = t_embed[len(t_embed) // 2], t_layer[len(t_layer) // 2]
    clip_s = e + 40 * l
    print(f"torch_version={torch.__version__}")
    print(f"torch_threads={torch.get_num_threads()}")
    print(f"torch_embed_s={e:.3f}")
    print(f"torch_layer_s={l:.3f}")
    print(f"torch_layer_cpu_s={c_layer[len(c_layer) // 2]:.2f}")
    print(f"torch_clip40_s={clip_s:.1f}")
    print(f"torch_clips_per_s={1 / clip_s:.5f}")
    print(f"torch_peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


if __name__ == "__main__":
    main()
