"""The baseline of scripts/bench.sh: the same Llama trained by a plain PyTorch
loop in Python, with the same torch wheel (so the same kernels underneath),
naive attention softmax(QK^T)V as a from-scratch implementation writes it
(or --attention sdpa for torch's fused kernel). Prints one JSON object.
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Block(nn.Module):
    def __init__(self, h, heads, inter, attention):
        super().__init__()
        self.heads, self.d, self.attention = heads, h // heads, attention
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(h), RMSNorm(h)
        self.q_proj, self.k_proj = nn.Linear(h, h, bias=False), nn.Linear(h, h, bias=False)
        self.v_proj, self.o_proj = nn.Linear(h, h, bias=False), nn.Linear(h, h, bias=False)
        self.gate_proj, self.up_proj = nn.Linear(h, inter, bias=False), nn.Linear(h, inter, bias=False)
        self.down_proj = nn.Linear(inter, h, bias=False)

    def attend(self, x, cos, sin):
        b, s, _ = x.shape
        q, k, v = (p(x).view(b, s, self.heads, self.d).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if self.attention == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.d)
            mask = torch.ones(s, s, dtype=torch.bool).triu(1)
            out = scores.masked_fill(mask, float("-inf")).softmax(-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))

    def forward(self, x, cos, sin):
        x = x + self.attend(self.input_layernorm(x), cos, sin)
        y = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(y)) * self.up_proj(y))


class Llama(nn.Module):
    def __init__(self, vocab, h, layers, heads, inter, attention):
        super().__init__()
        self.embed = nn.Embedding(vocab, h)
        self.layers = nn.ModuleList(Block(h, heads, inter, attention) for _ in range(layers))
        self.norm, self.head = RMSNorm(h), nn.Linear(h, vocab, bias=False)
        inv = 1.0 / (10000 ** (torch.arange(0, h // heads, 2, dtype=torch.float64) / (h // heads)))
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, tokens):
        pos = torch.arange(tokens.shape[1], dtype=torch.float64)
        angles = torch.cat([pos[:, None] * self.inv_freq] * 2, -1)
        cos, sin = angles.cos().float(), angles.sin().float()
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.head(self.norm(x))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("seq", type=int)
    p.add_argument("steps", type=int, nargs="?", default=4)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--attention", choices=["naive", "sdpa"], default="naive")
    a = p.parse_args()
    torch.manual_seed(0)
    model = Llama(a.vocab, a.hidden, a.layers, a.heads, a.intermediate, a.attention)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    tokens = torch.randint(a.vocab, (1, a.seq + 1))
    seconds = 0.0
    for step in range(a.steps + 1):  # step 0 warms up
        start = time.perf_counter()
        opt.zero_grad()
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.view(-1, a.vocab), tokens[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        loss.item()
        if step > 0:
            seconds += time.perf_counter() - start
    print(json.dumps({"impl": "pytorch-" + a.attention, "seq": a.seq,
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "tokens_per_s": a.steps * a.seq / seconds,
                      "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
