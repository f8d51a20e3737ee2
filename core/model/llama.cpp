#include "core/model/llama.h"

#include <ATen/CPUGeneratorImpl.h>

#include "core/util/trace.h"

namespace lt {
namespace {

at::Tensor region(const RegionFn& edge, const at::Tensor& x) { return edge ? edge(x) : x; }

// x entering a scope whose gradients someone waits for (gradient_handoff.h).
at::Tensor enter(const std::shared_ptr<GradientHandoff>& handoff, const at::Tensor& x, int64_t scope) {
  return handoff ? handoff->enter(x, scope) : x;
}

at::Tensor run(const Runner& runner, const LayerPart& f, const at::Tensor& x) { return runner ? runner(f, x) : f(x); }

// Kv heads a tp rank holds, and the first: split when there are at least as
// many as ranks, else one each, shared by tp / kv_heads ranks.
int64_t local_kv_heads(const ModelConfig& c, const ModelShard& s) {
  return std::max<int64_t>(1, c.num_kv_heads / s.tp_size);
}
int64_t first_kv_head(const ModelConfig& c, const ModelShard& s) {
  return c.num_kv_heads >= s.tp_size ? s.tp_rank * c.num_kv_heads / s.tp_size
                                     : s.tp_rank / (s.tp_size / c.num_kv_heads);
}

// Megatron's split: q, k, v, gate, up by output rows (column-parallel),
// o and down by input columns (row-parallel), embedding and head by
// vocabulary rows; norms are replicated. A mixture-of-experts layer is
// not split by tp: its experts are split by ep.
TensorSlice slice_for(const std::string& name, int64_t rows, const ModelConfig& c, const ModelShard& s) {
  const int64_t d = c.resolved_head_dim(), heads = c.num_heads / s.tp_size;
  const int64_t columns = c.intermediate_size / s.tp_size, vocab = c.vocab_size / s.tp_size;
  if (name.find(".mlp.experts.") != std::string::npos) {
    const int64_t local = c.moe.experts / s.ep_size;
    return {0, s.ep_rank * local, c.moe.experts};
  }
  if (name.find(".mlp.gate.") != std::string::npos || name.find(".mlp.shared_expert") != std::string::npos)
    return {0, 0, rows};  // whole on every rank holding the layer
  if (name.find("q_proj") != std::string::npos) return {0, s.tp_rank * heads * d, c.num_heads * d};
  if (name.find("k_proj") != std::string::npos || name.find("v_proj") != std::string::npos) {
    const int64_t copies = std::max<int64_t>(1, s.tp_size / c.num_kv_heads);
    return {0, first_kv_head(c, s) * d, c.num_kv_heads * d, copies, true};
  }
  if (name.find("o_proj") != std::string::npos) return {1, s.tp_rank * heads * d, c.num_heads * d};
  if (name.find("gate_proj") != std::string::npos || name.find("up_proj") != std::string::npos)
    return {0, s.tp_rank * columns, c.intermediate_size};
  if (name.find("down_proj") != std::string::npos) return {1, s.tp_rank * columns, c.intermediate_size};
  if (name.find("embed_tokens") != std::string::npos || name.find("lm_head") != std::string::npos)
    return {0, s.tp_rank * vocab, c.vocab_size};
  // A head's norm is shared by the heads, which the tp ranks split: each
  // rank's gradient is its heads' share.
  if (name.find("self_attn.q_norm") != std::string::npos || name.find("self_attn.k_norm") != std::string::npos)
    return {0, 0, d, s.tp_size, s.tp_size > 1};
  return {0, 0, c.hidden_size, s.tp_size, s.tp_sequence};  // norms
}

// A generator per parameter, so a value does not depend on which other
// parameters this rank holds.
uint64_t parameter_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
  return seed ^ (h * 0x9E3779B97F4A7C15ull);
}

}  // namespace

LlamaAttentionImpl::LlamaAttentionImpl(const ModelConfig& c, const ModelShard& s)
    : heads_(c.num_heads / s.tp_size), kv_heads_(local_kv_heads(c, s)),
      head_dim_(c.resolved_head_dim()), options_{c.attention, c.attention_block} {
  q_proj = register_module("q_proj", Linear(c.hidden_size, heads_ * head_dim_, c.attention_bias, s.compute));
  k_proj = register_module("k_proj", Linear(c.hidden_size, kv_heads_ * head_dim_, c.attention_bias, s.compute));
  v_proj = register_module("v_proj", Linear(c.hidden_size, kv_heads_ * head_dim_, c.attention_bias, s.compute));
  o_proj = register_module("o_proj", Linear(heads_ * head_dim_, c.hidden_size, false, s.compute));
  if (c.qk_norm) {
    q_norm = register_module("q_norm", RMSNorm(head_dim_, c.rms_norm_eps, s.compute));
    k_norm = register_module("k_norm", RMSNorm(head_dim_, c.rms_norm_eps, s.compute));
  }
}

at::Tensor LlamaAttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                       const AttentionMask& mask) {
  const auto b = x.size(0), s = x.size(1);
  auto q = q_proj(x).view({b, s, heads_, head_dim_});
  auto k = k_proj(x).view({b, s, kv_heads_, head_dim_});
  if (q_norm) q = q_norm(q), k = k_norm(k);  // each head by itself: no communication under tp or Ulysses
  q = apply_rotary(q, cos, sin);
  k = apply_rotary(k, cos, sin);
  auto v = v_proj(x).view({b, s, kv_heads_, head_dim_});
  LT_TRACE_SCOPE("attention");
  auto out = attend_(q, k, v, mask, options_).out;
  return o_proj(out.reshape({b, s, heads_ * head_dim_}));
}

LlamaBlockImpl::LlamaBlockImpl(const ModelConfig& c, const ModelShard& s, int64_t index)
    : enter_(s.enter), leave_(s.leave), handoff_(s.handoff), index_(index) {
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, s.compute));
  self_attn = register_module("self_attn", LlamaAttention(c, s));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, s.compute));
  if (c.moe.is_moe_layer(index)) moe = register_module("mlp", SparseMoe(c, s, index));
  else mlp = register_module("mlp", LlamaMLP(c.hidden_size, c.intermediate_size / s.tp_size, s.compute));
}

at::Tensor LlamaBlockImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                   const AttentionMask& mask) {
  // By value: a runner that recomputes keeps these until backward.
  LayerPart attention = [this, cos, sin, mask](const at::Tensor& t) {
    return region(leave_, self_attn(region(enter_, input_layernorm(t)), cos, sin, mask));
  };
  LayerPart feed_forward = [this](const at::Tensor& t) {
    LT_TRACE_SCOPE("mlp");
    return moe ? moe(t) : mlp(t);
  };
  LayerPart layer = [this, attention, feed_forward](const at::Tensor& t) {
    auto h = t + run(runners_.attention, attention, t);
    return h + region(leave_, run(runners_.mlp, feed_forward, region(enter_, post_attention_layernorm(h))));
  };
  return run(runners_.layer, layer, enter(handoff_, x, index_));
}

LlamaModelImpl::LlamaModelImpl(const ModelConfig& c, const ModelShard& s)
    : shard_(s), vocab_offset_(s.tp_rank * c.vocab_size / s.tp_size), rope_(rope_frequencies(c)) {
  if (s.first_stage || (s.last_stage && c.tie_embeddings))
    embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size / s.tp_size, c.hidden_size));
  const int64_t count = s.num_layers < 0 ? c.num_layers : s.num_layers;
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> blocks;
  for (int64_t i = s.first_layer; i < s.first_layer + count; ++i)
    blocks.emplace_back(std::to_string(i), LlamaBlock(c, s, i).ptr());
  layers = register_module("layers", torch::nn::ModuleDict(blocks));
  if (s.last_stage) norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps, s.compute));
}

// Vocabulary-parallel lookup: rows outside this rank's slice are zero, and
// the region edge sums the ranks' parts.
// The rows are gathered from the master table and then cast: the table's
// gradient accumulates in fp32 without a bf16 copy of the whole table.
at::Tensor LlamaModelImpl::embed(const at::Tensor& tokens) {
  if (shard_.tp_size == 1) return compute_activation(shard_.compute, embed_tokens(tokens));
  const int64_t rows = embed_tokens->weight.size(0);
  auto local = tokens - vocab_offset_;
  auto inside = local.ge(0).logical_and(local.lt(rows)).unsqueeze(-1);
  return region(shard_.leave, compute_activation(shard_.compute, embed_tokens(local.clamp(0, rows - 1)) * inside));
}

at::Tensor LlamaModelImpl::forward(const ModelInput& input, const at::Tensor& hidden) {
  auto [cos, sin] = rope_.cos_sin(input.positions);
  auto h = shard_.first_stage ? embed(input.tokens) : hidden;
  for (const auto& layer : layers->values()) h = layer->as<LlamaBlock>()->forward(h, cos, sin, input.mask);
  return shard_.last_stage ? norm(enter(shard_.handoff, h, GradientHandoff::kHead)) : h;
}

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const ModelConfig& c, ModelShard shard)
    : config_(c), shard_(std::move(shard)) {
  if (c.moe.enabled() && !shard_.moe) shard_.moe = std::make_shared<MoeBalance>(c);
  if (!shard_.handoff) shard_.handoff = std::make_shared<GradientHandoff>();
  model = register_module("model", LlamaModel(c, shard_));
  if (shard_.last_stage && !c.tie_embeddings)
    lm_head = register_module("lm_head", Linear(c.hidden_size, c.vocab_size / shard_.tp_size, false, shard_.compute));
  for (const auto& item : named_parameters())
    slices_[item.key()] = slice_for(item.key(), item.value().size(0), c, shard_);
}

TensorSlice LlamaForCausalLMImpl::slice_of(const std::string& name) const { return slices_.at(name); }

at::Tensor LlamaForCausalLMImpl::head_weight() const {
  return compute_weight(shard_.compute, lm_head ? lm_head->weight : model->embed_tokens->weight);
}

at::Tensor LlamaForCausalLMImpl::head_input(const ModelInput& input, const at::Tensor& hidden) {
  return region(shard_.enter, model->forward(input, hidden));
}

at::Tensor LlamaForCausalLMImpl::forward(const ModelInput& input, const at::Tensor& hidden) {
  if (!shard_.last_stage) return model->forward(input, hidden);
  // The head's weight is read after its scope is entered (gradient_handoff.h).
  const auto x = head_input(input, hidden);
  return at::linear(x, head_weight());
}

void LlamaForCausalLMImpl::initialize(uint64_t seed) {
  at::NoGradGuard no_grad;
  for (auto& item : named_parameters()) {
    auto& p = item.value();
    const auto& name = item.key();
    const TensorSlice slice = slice_of(name);
    auto full = p.sizes().vec();
    full[slice.dim] = slice.full;
    at::Tensor value;
    if (name.find("norm") != std::string::npos) value = at::ones(full);
    else if (name.ends_with(".bias")) value = at::zeros(full);
    else
      value = at::empty(full).normal_(0.0, config_.init_std,
                                      at::make_generator<at::CPUGeneratorImpl>(parameter_seed(seed, name)));
    p.copy_(value.narrow(slice.dim, slice.offset, p.size(slice.dim)));
  }
}

void LlamaForCausalLMImpl::set_attention(const AttentionFn& attend) {
  for (const auto& layer : model->layers->values()) layer->as<LlamaBlock>()->self_attn->set_attention(attend);
}

void LlamaForCausalLMImpl::set_runners(const std::function<LayerRunners(int64_t layer)>& runners) {
  for (const auto& [index, layer] : model->layers->items())
    layer->as<LlamaBlock>()->set_runners(runners(std::stoll(index)));
}

ScopedLayers::ScopedLayers(LlamaForCausalLMImpl& model) : model_(model) {
  for (const auto& layer : model_.model->layers->values()) {
    auto& block = *layer->as<LlamaBlock>();
    saved_.emplace_back(block.self_attn->attend(), block.runners());
  }
}

ScopedLayers::~ScopedLayers() {
  size_t i = 0;
  for (const auto& layer : model_.model->layers->values()) {
    auto& block = *layer->as<LlamaBlock>();
    block.self_attn->set_attention(saved_[i].first);
    block.set_runners(saved_[i++].second);
  }
}

bool read_in_fp32(const std::string& name) {
  return name.ends_with("embed_tokens.weight") || name.ends_with(".mlp.gate.weight");
}

}  // namespace lt
