#include "core/model/llama.h"

#include <ATen/CPUGeneratorImpl.h>

namespace lt {
namespace {

torch::nn::Linear linear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

}  // namespace

LlamaAttentionImpl::LlamaAttentionImpl(const ModelConfig& c)
    : heads_(c.num_heads), kv_heads_(c.num_kv_heads), head_dim_(c.resolved_head_dim()),
      options_{parse_attention_kernel(c.attention), c.attention_block} {
  q_proj = register_module("q_proj", linear(c.hidden_size, heads_ * head_dim_, c.attention_bias));
  k_proj = register_module("k_proj", linear(c.hidden_size, kv_heads_ * head_dim_, c.attention_bias));
  v_proj = register_module("v_proj", linear(c.hidden_size, kv_heads_ * head_dim_, c.attention_bias));
  o_proj = register_module("o_proj", linear(heads_ * head_dim_, c.hidden_size, false));
}

at::Tensor LlamaAttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                       const AttentionMask& mask) {
  const auto b = x.size(0), s = x.size(1);
  auto q = apply_rotary(q_proj(x).view({b, s, heads_, head_dim_}), cos, sin);
  auto k = apply_rotary(k_proj(x).view({b, s, kv_heads_, head_dim_}), cos, sin);
  auto v = v_proj(x).view({b, s, kv_heads_, head_dim_});
  auto out = attend_(q, k, v, mask, options_).out;
  return o_proj(out.reshape({b, s, heads_ * head_dim_}));
}

LlamaMLPImpl::LlamaMLPImpl(const ModelConfig& c) {
  gate_proj = register_module("gate_proj", linear(c.hidden_size, c.intermediate_size, false));
  up_proj = register_module("up_proj", linear(c.hidden_size, c.intermediate_size, false));
  down_proj = register_module("down_proj", linear(c.intermediate_size, c.hidden_size, false));
}

at::Tensor LlamaMLPImpl::forward(const at::Tensor& x) { return down_proj(at::silu(gate_proj(x)) * up_proj(x)); }

LlamaBlockImpl::LlamaBlockImpl(const ModelConfig& c) {
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  self_attn = register_module("self_attn", LlamaAttention(c));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  mlp = register_module("mlp", LlamaMLP(c));
}

at::Tensor LlamaBlockImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                   const AttentionMask& mask) {
  auto h = x + self_attn(input_layernorm(x), cos, sin, mask);
  return h + mlp(post_attention_layernorm(h));
}

LlamaModelImpl::LlamaModelImpl(const ModelConfig& c) : rope_(c.resolved_head_dim(), c.rope_theta) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(LlamaBlock(c));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

at::Tensor LlamaModelImpl::forward(const ModelInput& input) {
  auto [cos, sin] = rope_.cos_sin(input.positions);
  auto h = embed_tokens(input.tokens);
  for (const auto& layer : *layers) h = layer->as<LlamaBlock>()->forward(h, cos, sin, input.mask);
  return norm(h);
}

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const ModelConfig& c) : config_(c) {
  model = register_module("model", LlamaModel(c));
  if (!c.tie_embeddings) lm_head = register_module("lm_head", linear(c.hidden_size, c.vocab_size, false));
}

const at::Tensor& LlamaForCausalLMImpl::head_weight() const {
  return lm_head ? lm_head->weight : model->embed_tokens->weight;
}

at::Tensor LlamaForCausalLMImpl::forward(const ModelInput& input) {
  return at::linear(model->forward(input), head_weight());
}

void LlamaForCausalLMImpl::initialize(uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::NoGradGuard no_grad;
  for (auto& item : named_parameters()) {
    auto& p = item.value();
    const auto& name = item.key();
    at::Tensor value;
    if (name.find("norm") != std::string::npos) value = at::ones(p.sizes());
    else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) value = at::zeros(p.sizes());
    else value = at::empty(p.sizes()).normal_(0.0, config_.init_std, generator);
    p.copy_(value);
  }
}

void LlamaForCausalLMImpl::set_attention(const AttentionFn& attend) {
  for (const auto& layer : *model->layers) layer->as<LlamaBlock>()->self_attn->set_attention(attend);
}

int64_t flop_parameters(const ModelConfig& c) {
  const int64_t h = c.hidden_size, d = c.resolved_head_dim();
  const int64_t attention = h * c.num_heads * d * 2 + h * c.num_kv_heads * d * 2;
  const int64_t mlp = 3 * h * c.intermediate_size;
  return c.num_layers * (attention + mlp) + h * c.vocab_size;
}

}  // namespace lt
