// The Llama-family decoder (Llama, Mistral, Qwen2, Qwen3 and their
// mixture-of-experts kin Qwen2-MoE, Qwen3-MoE and Mixtral), written once
// and plainly.
// Module and parameter names follow HF (model.layers.N.self_attn.q_proj.weight)
// so HF checkpoints map 1:1; parallelism is applied around it, not inside.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/moduledict.h>
#include <torch/nn/modules/embedding.h>

#include <map>
#include <utility>
#include <vector>

#include "core/attention/attention.h"
#include "core/config/config.h"
#include "core/model/linear.h"
#include "core/model/mlp.h"
#include "core/model/model_shard.h"
#include "core/model/moe.h"
#include "core/model/rms_norm.h"
#include "core/model/rope.h"

namespace lt {

// What one forward needs besides the weights.
struct ModelInput {
  at::Tensor tokens;     // [batch, seq] int64
  at::Tensor positions;  // [batch, seq] int64, global positions for RoPE
  AttentionMask mask;
};

// Every layer holds its tensor-parallel rank's heads and MLP columns; the
// block applies the shard's region edges around attention and MLP.
class LlamaAttentionImpl : public torch::nn::Module {
 public:
  LlamaAttentionImpl(const ModelConfig& config, const ModelShard& shard);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const AttentionMask& mask);
  void set_attention(AttentionFn attend) { attend_ = std::move(attend); }
  const AttentionFn& attend() const { return attend_; }

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  RMSNorm q_norm{nullptr}, k_norm{nullptr};  // Qwen3's, over each head; null without model.qk_norm

 private:
  int64_t heads_, kv_heads_, head_dim_;
  AttentionOptions options_;
  AttentionFn attend_ = attention;
};
TORCH_MODULE(LlamaAttention);

// How a part of a layer runs on its input: f(x), unless offload/activations
// sets recomputation in backward (checkpointing) or sequence tiling.
using LayerPart = std::function<at::Tensor(const at::Tensor&)>;
using Runner = std::function<at::Tensor(const LayerPart& f, const at::Tensor& x)>;
struct LayerRunners {
  Runner layer;      // the whole layer
  Runner attention;  // norm, tp region and attention, from the layer input
  Runner mlp;        // the MLP alone, inside its tp region
};

class LlamaBlockImpl : public torch::nn::Module {
 public:
  LlamaBlockImpl(const ModelConfig& config, const ModelShard& shard, int64_t index);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const AttentionMask& mask);
  void set_runners(LayerRunners runners) { runners_ = std::move(runners); }
  const LayerRunners& runners() const { return runners_; }

  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};   // a dense layer's
  SparseMoe moe{nullptr};  // or a mixture-of-experts layer's (also named "mlp", as HF)

 private:
  RegionFn enter_, leave_;
  std::shared_ptr<GradientHandoff> handoff_;
  int64_t index_;
  LayerRunners runners_;
};
TORCH_MODULE(LlamaBlock);

// A pipeline stage holds its layers (named by their global index), the
// embedding on the first stage and the final norm on the last; the last stage
// of a tied model also holds the embedding, as its output projection.
class LlamaModelImpl : public torch::nn::Module {
 public:
  LlamaModelImpl(const ModelConfig& config, const ModelShard& shard);
  // The first stage embeds input.tokens; the others continue from `hidden`.
  // Returns hidden states [batch, seq, hidden], normed on the last stage.
  at::Tensor forward(const ModelInput& input, const at::Tensor& hidden = {});

  torch::nn::Embedding embed_tokens{nullptr};  // this rank's vocabulary rows
  torch::nn::ModuleDict layers{nullptr};
  RMSNorm norm{nullptr};

 private:
  at::Tensor embed(const at::Tensor& tokens);

  ModelShard shard_;
  int64_t vocab_offset_ = 0;
  RotaryEmbedding rope_;
};
TORCH_MODULE(LlamaModel);

class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  explicit LlamaForCausalLMImpl(const ModelConfig& config, ModelShard shard = {});
  // Logits [batch, seq, vocab] (this tp rank's vocabulary slice), or on a
  // stage before the last its hidden states; `hidden` is what the previous
  // stage sent.
  at::Tensor forward(const ModelInput& input, const at::Tensor& hidden = {});
  // What the output projection reads (the last stage): the final normed
  // hidden states, whole along the sequence within the tp group.
  at::Tensor head_input(const ModelInput& input, const at::Tensor& hidden = {});

  // Weights drawn from N(0, init_std), each from a generator seeded by `seed`
  // and its name, norms at one, biases at zero: the same values on every
  // machine and device, and for any tensor or pipeline split.
  void initialize(uint64_t seed);

  // Where a parameter of this rank sits in the full model's tensor.
  TensorSlice slice_of(const std::string& name) const;
  const ModelShard& shard() const { return shard_; }
  const ModelConfig& config() const { return config_; }

  // Output projection weight, which is the embedding when tied, in the
  // compute dtype.
  at::Tensor head_weight() const;

  // Every layer attends with `attend` (a sequence-parallel strategy, or
  // plain attention() again).
  void set_attention(const AttentionFn& attend);
  // Every layer runs its parts with `runners(layer index)`.
  void set_runners(const std::function<LayerRunners(int64_t layer)>& runners);

  LlamaModel model{nullptr};
  Linear lm_head{nullptr};  // null when embeddings are tied, or before the last stage

 private:
  ModelConfig config_;
  ModelShard shard_;
  std::map<std::string, TensorSlice> slices_;  // every parameter's place in the full model
};
TORCH_MODULE(LlamaForCausalLM);

// The model is fixed once its rank has built it (rank_model.h); a change of
// the layers' attention or runners for a while (a step of one adaptive
// group, the memory profile) is made while one of these lives, and every
// layer gets back what it had when the scope ends.
class ScopedLayers {
 public:
  explicit ScopedLayers(LlamaForCausalLMImpl& model);
  ~ScopedLayers();
  ScopedLayers(const ScopedLayers&) = delete;
  ScopedLayers& operator=(const ScopedLayers&) = delete;

 private:
  LlamaForCausalLMImpl& model_;
  std::vector<std::pair<AttentionFn, LayerRunners>> saved_;  // per layer, in order
};

// Parameters the model reads in fp32 whatever it computes in: the
// embedding table (rows gathered from it, then cast, so its gradient
// accumulates in fp32) and the MoE router (routing decided in fp32).
bool read_in_fp32(const std::string& name);

}  // namespace lt
