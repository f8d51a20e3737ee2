"""HF transformers as the oracle of our HF import and export.

  hf_models.py write OUT   tiny random Llama, Qwen2 and Mistral models saved with
                           save_pretrained (sharded, in several dtypes and RoPE
                           scalings), a token sequence, the loss transformers
                           computes on it and each model's RoPE inverse
                           frequencies: OUT/expected.json
  hf_models.py read OUT    loads each OUT/exported/<name> (written by our export)
                           with transformers and checks its loss on the same
                           tokens against expected.json; exits 1 on a mismatch

Exits 77 (ctest: skipped) when transformers is not installed.
"""
import json
import os
import sys

try:
    import torch
    import transformers
except ImportError as error:
    print(f"skipped: {error}")
    sys.exit(77)

COMMON = dict(vocab_size=96, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6)

# name: (config class, extra config, saved dtype, shard size)
MODELS = {
    "llama3_bf16_sharded": (transformers.LlamaConfig,
                            dict(rope_theta=500000.0, attention_bias=False, tie_word_embeddings=False,
                                 rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
                            torch.bfloat16, "40KB"),
    "qwen2_yarn_tied": (transformers.Qwen2Config,
                        dict(rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
                             rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                           "original_max_position_embeddings": 128}),
                        torch.float32, "10GB"),
    "mistral_linear_f16": (transformers.MistralConfig,
                           dict(rope_theta=10000.0, sliding_window=None, head_dim=24,
                                rope_scaling={"type": "linear", "factor": 2.0}),
                           torch.float16, "10GB"),
    "llama_dynamic": (transformers.LlamaConfig,
                      dict(rope_theta=10000.0, rope_scaling={"rope_type": "dynamic", "factor": 2.0}),
                      torch.float32, "10GB"),
}


def tokens():
    generator = torch.Generator().manual_seed(3)
    return torch.randint(0, COMMON["vocab_size"], (1, 200), generator=generator)


def loss_of(model, ids, autocast=False):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return model(input_ids=ids, labels=ids).loss.item()


def write(out):
    ids = tokens()
    expected = {"tokens": ids[0].tolist(), "models": {}}
    for name, (config_class, extra, dtype, shard) in MODELS.items():
        torch.manual_seed(len(name))
        config = config_class(**COMMON, **extra)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        with torch.no_grad():
            for key, p in model.named_parameters():
                if "norm" in key or key.endswith("bias"):  # visible, not the ones and zeros of init
                    p.add_(torch.randn_like(p) * 0.1)
                if "q_proj.weight" in key or "k_proj.weight" in key:  # sharp attention: RoPE matters
                    p.mul_(25)
        model.to(dtype).save_pretrained(os.path.join(out, name), max_shard_size=shard)
        model = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(out, name), dtype=torch.float32)
        rotary = model.model.rotary_emb
        # The oracle must see the scaling: without it the loss differs (but
        # for dynamic NTK, which leaves lengths within max_position_embeddings alone).
        plain = config_class(**COMMON, **{**extra, "rope_scaling": None})
        unscaled = transformers.AutoModelForCausalLM.from_config(plain, dtype=torch.float32)
        unscaled.load_state_dict(model.state_dict())
        changed = abs(loss_of(unscaled, ids) - loss_of(model, ids)) > 1e-3
        assert changed or config.rope_parameters["rope_type"] == "dynamic", f"{name}: RoPE scaling changes nothing"
        expected["models"][name] = {"loss": loss_of(model, ids), "bf16_autocast_loss": loss_of(model, ids, True),
                                    "inv_freq": rotary.inv_freq.double().tolist(),
                                    "attention_factor": float(rotary.attention_scaling)}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)


def read(out):
    with open(os.path.join(out, "expected.json")) as f:
        expected = json.load(f)
    ids = torch.tensor([expected["tokens"]])
    failed = 0
    for name, want in expected["models"].items():
        model = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(out, "exported", name),
                                                                  dtype=torch.float32)
        got = loss_of(model, ids)
        ok = abs(got - want["loss"]) <= 1e-5 * abs(want["loss"])
        failed += not ok
        print(f"{name}: transformers loads our export, loss {got:.7f}, expected {want['loss']:.7f}: "
              f"{'ok' if ok else 'MISMATCH'}")
    return 1 if failed else 0


if __name__ == "__main__":
    command, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    sys.exit(write(out) if command == "write" else read(out))
