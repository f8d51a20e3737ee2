// The Llama-family decoder (Llama, Qwen2, Mistral), written once and plainly.
// Module and parameter names follow HF (model.layers.N.self_attn.q_proj.weight)
// so HF checkpoints map 1:1; parallelism is applied around it, not inside.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include "core/attention/attention.h"
#include "core/config/config.h"
#include "core/model/rms_norm.h"
#include "core/model/rope.h"

namespace lt {

// What one forward needs besides the weights.
struct ModelInput {
  at::Tensor tokens;     // [batch, seq] int64
  at::Tensor positions;  // [batch, seq] int64, global positions for RoPE
  AttentionMask mask;
};

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  explicit LlamaAttentionImpl(const ModelConfig& config);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const AttentionMask& mask);
  void set_attention(AttentionFn attend) { attend_ = std::move(attend); }

  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t heads_, kv_heads_, head_dim_;
  AttentionOptions options_;
  AttentionFn attend_ = attention;
};
TORCH_MODULE(LlamaAttention);

class LlamaMLPImpl : public torch::nn::Module {
 public:
  explicit LlamaMLPImpl(const ModelConfig& config);
  at::Tensor forward(const at::Tensor& x);

  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMLP);

class LlamaBlockImpl : public torch::nn::Module {
 public:
  explicit LlamaBlockImpl(const ModelConfig& config);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const AttentionMask& mask);

  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
};
TORCH_MODULE(LlamaBlock);

class LlamaModelImpl : public torch::nn::Module {
 public:
  explicit LlamaModelImpl(const ModelConfig& config);
  at::Tensor forward(const ModelInput& input);  // final hidden states [batch, seq, hidden]

  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};

 private:
  RotaryEmbedding rope_;
};
TORCH_MODULE(LlamaModel);

class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  explicit LlamaForCausalLMImpl(const ModelConfig& config);
  at::Tensor forward(const ModelInput& input);  // logits [batch, seq, vocab]

  // Weights drawn from N(0, init_std) with a generator seeded by `seed`,
  // norms at one, biases at zero: the same on every machine and device.
  void initialize(uint64_t seed);

  // Output projection weight, which is the embedding when tied.
  const at::Tensor& head_weight() const;

  // Every layer attends with `attend` (a sequence-parallel strategy, or
  // plain attention() again).
  void set_attention(const AttentionFn& attend);

  LlamaModel model{nullptr};
  torch::nn::Linear lm_head{nullptr};  // null when embeddings are tied

 private:
  ModelConfig config_;
};
TORCH_MODULE(LlamaForCausalLM);

// Parameters that are neither embeddings nor norms/biases, plus the head:
// the N of MFU's 6N.
int64_t flop_parameters(const ModelConfig& config);

}  // namespace lt
