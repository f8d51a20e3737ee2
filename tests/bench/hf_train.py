"""The peer arm of scripts/bench.sh's training benchmark: the loop a user of
HF transformers runs (LlamaForCausalLM, SDPA attention, fused AdamW, bf16
autocast or fp32), on the same model shape and random tokens as
lt_bench_train. Prints one JSON object. transformers is a benchmark
dependency only (scripts/setup.sh --tests), never longtrain's.
"""
import argparse
import json
import resource
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("seq", type=int)
    p.add_argument("steps", type=int, nargs="?", default=4)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1376)
    p.add_argument("--vocab", type=int, default=32000)
    a = p.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
                         num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                         intermediate_size=a.intermediate, max_position_embeddings=a.seq,
                         tie_word_embeddings=False, attn_implementation="sdpa")
    model = LlamaForCausalLM(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    tokens = torch.randint(a.vocab, (1, a.seq + 1))
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    seconds = 0.0
    for step in range(a.steps + 1):  # step 0 warms up
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            logits = model(input_ids=inputs).logits
            loss = torch.nn.functional.cross_entropy(logits.float().view(-1, a.vocab), labels.reshape(-1))
        loss.backward()
        opt.step()
        loss.item()
        if step > 0:
            seconds += time.perf_counter() - start
    print(json.dumps({"impl": "hf-" + a.precision, "seq": a.seq,
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "tokens_per_s": a.steps * a.seq / seconds,
                      "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
