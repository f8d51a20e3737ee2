"""HF transformers as the oracle of our HF import and export.

  hf_models.py write OUT   tiny random models of every family we import (Llama,
                           Qwen2, Mistral, Qwen3, Qwen3-MoE with a dense layer,
                           Qwen2-MoE with its shared expert, Mixtral) saved with
                           save_pretrained (sharded, in several dtypes and RoPE
                           scalings), a token sequence, the loss transformers
                           computes on it in fp32 and under bf16 autocast, each
                           model's RoPE inverse frequencies (OUT/expected.json),
                           its logits (OUT/<name>.logits.pt), and the fp32
                           gradients of the same model with blunt attention
                           (OUT/<name>_gradients/: the checkpoint and
                           grads.safetensors; sharp attention, which makes
                           RoPE matter, makes fp32 itself err by 3e-5 to 2e-4
                           against fp64 in transformers' own gradients)
  hf_models.py read OUT    loads each OUT/exported/<name> (written by our export)
                           with transformers: no missing, unexpected or
                           mismatched tensor, the same logits and loss on the
                           same tokens; exits 1 on a mismatch

Exits 77 (ctest: skipped) when transformers is not installed.
"""
import json
import os
import sys

try:
    import torch
    import transformers
    from safetensors.torch import save_file
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
    "qwen3_yarn_tied": (transformers.Qwen3Config,
                        dict(rope_theta=1000000.0, tie_word_embeddings=True, head_dim=16,
                             rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                           "original_max_position_embeddings": 128}),
                        torch.bfloat16, "40KB"),
    # Two MoE layers around a dense one.
    "qwen3_moe_dense_layer": (transformers.Qwen3MoeConfig,
                              dict(rope_theta=1000000.0, num_experts=8, num_experts_per_tok=2,
                                   moe_intermediate_size=32, norm_topk_prob=True, mlp_only_layers=[1],
                                   rope_scaling=None),
                              torch.float32, "10GB"),
    "qwen2_moe_shared": (transformers.Qwen2MoeConfig,
                         dict(rope_theta=1000000.0, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                              shared_expert_intermediate_size=48, norm_topk_prob=False, decoder_sparse_step=1,
                              rope_scaling=None),
                         torch.float32, "10GB"),
    "mixtral": (transformers.MixtralConfig,
                dict(rope_theta=1000000.0, num_local_experts=4, num_experts_per_tok=2, sliding_window=None,
                     rope_scaling=None),
                torch.bfloat16, "10GB"),
}


def perturb(model, sharp=True):
    """Weights no initialisation gives, that make each feature matter."""
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "norm" in key or key.endswith("bias"):  # visible, not the ones and zeros of init
                p.add_(torch.randn_like(p) * 0.1)
            if sharp and ("q_proj.weight" in key or "k_proj.weight" in key):  # sharp attention: RoPE matters
                p.mul_(25)
            if sharp and ("q_norm" in key or "k_norm" in key):  # the same behind Qwen3's head norms
                p.mul_(5)
            if key.endswith("mlp.gate.weight"):  # routers with clear choices: no near-ties to flip
                p.mul_(50)


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
        perturb(model)
        model.to(dtype).save_pretrained(os.path.join(out, name), max_shard_size=shard)
        model = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(out, name), dtype=torch.float32)
        rotary = model.model.rotary_emb
        if extra.get("rope_scaling"):
            # The oracle must see the scaling: without it the loss differs (but
            # for dynamic NTK, which leaves lengths within max_position_embeddings alone).
            plain = config_class(**COMMON, **{**extra, "rope_scaling": None})
            unscaled = transformers.AutoModelForCausalLM.from_config(plain, dtype=torch.float32)
            unscaled.load_state_dict(model.state_dict())
            changed = abs(loss_of(unscaled, ids) - loss_of(model, ids)) > 1e-3
            assert changed or config.rope_parameters["rope_type"] == "dynamic", f"{name}: RoPE scaling changes nothing"
        with torch.no_grad():
            torch.save(model(input_ids=ids).logits, os.path.join(out, name + ".logits.pt"))
        # The first step's gradients (fp32, no auxiliary loss) by transformers' own names.
        torch.manual_seed(len(name))
        blunt = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        perturb(blunt, sharp=False)
        blunt.save_pretrained(os.path.join(out, name + "_gradients"))
        blunt(input_ids=ids, labels=ids).loss.backward()
        save_file({key: p.grad.contiguous() for key, p in blunt.named_parameters()},
                  os.path.join(out, name + "_gradients", "grads.safetensors"))
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
        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            os.path.join(out, "exported", name), dtype=torch.float32, output_loading_info=True)
        strays = {kind: keys for kind, keys in info.items() if keys}
        got = loss_of(model, ids)
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        logit_error = (logits - torch.load(os.path.join(out, name + ".logits.pt"))).abs().max().item()
        ok = abs(got - want["loss"]) <= 1e-5 * abs(want["loss"]) and logit_error < 1e-4 and not strays
        failed += not ok
        print(f"{name}: transformers loads our export as {type(model).__name__}, loss {got:.7f}, "
              f"expected {want['loss']:.7f}, largest logit difference {logit_error:.1e}, "
              f"stray tensors {strays or 'none'}: {'ok' if ok else 'MISMATCH'}")
    return 1 if failed else 0


if __name__ == "__main__":
    command, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    sys.exit(write(out) if command == "write" else read(out))
