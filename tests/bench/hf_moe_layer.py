"""transformers' own Qwen3-MoE block on the shapes of lt_bench_moe layer
(hidden 2048, 128 experts, top 8, width 768, 512 tokens): forward and
backward, best of REPEATS, on as many threads as longtrain's run. One JSON
line; nothing (exit 0) where transformers is not installed.

usage: python3 tests/bench/hf_moe_layer.py REPEATS THREADS
"""
import json
import sys
import time

try:
    import torch
    import transformers
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock
except ImportError:
    sys.exit(0)

repeats, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
config = transformers.Qwen3MoeConfig(hidden_size=2048, num_experts=128, num_experts_per_tok=8,
                                     moe_intermediate_size=768, norm_topk_prob=True)
block = Qwen3MoeSparseMoeBlock(config)
with torch.no_grad():
    for p in block.parameters():
        p.normal_(0, 0.02)
x = torch.randn(1, 512, 2048, requires_grad=True)
probe = torch.randn(1, 512, 2048)


def step():
    out = block(x)
    (out[0] if isinstance(out, tuple) else out).mul(probe).sum().backward()
    block.zero_grad()


step()
best = float("inf")
for _ in range(repeats):
    start = time.perf_counter()
    step()
    best = min(best, time.perf_counter() - start)
print(json.dumps({"bench": "hf_layer", "transformers": transformers.__version__, "tokens": 512, "threads": threads,
                  "hf_s": best, "hf_tokens_per_s": 512 / best}))
