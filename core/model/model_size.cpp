#include "core/model/model_size.h"

#include <algorithm>

namespace lt {
namespace {

// One expert's gate, up and down projections.
int64_t expert_parameters(const ModelConfig& m) { return 3 * m.hidden_size * m.expert_columns(); }

int64_t shared_expert_parameters(const ModelConfig& m) {
  return 3 * m.hidden_size * m.moe.shared_expert_intermediate_size;
}

// A mixture-of-experts layer's MLP parameters (tp 1): the router,
// `experts` experts and the shared one with its gate.
int64_t sparse_mlp_parameters(const ModelConfig& m, int64_t experts) {
  const int64_t shared = m.moe.shared_expert_intermediate_size > 0 ? shared_expert_parameters(m) + m.hidden_size : 0;
  return m.hidden_size * m.moe.experts + experts * expert_parameters(m) + shared;
}

}  // namespace

int64_t flop_parameters(const ModelConfig& c) {
  const int64_t h = c.hidden_size, d = c.resolved_head_dim();
  const int64_t attention = h * c.num_heads * d * 2 + h * c.num_kv_heads * d * 2;
  const int64_t dense = 3 * h * c.intermediate_size;
  // A mixture-of-experts layer: the router, top_k experts and the shared one.
  const int64_t sparse = h * c.moe.experts + c.moe.top_k * expert_parameters(c) + shared_expert_parameters(c);
  int64_t layers = 0;
  for (int64_t i = 0; i < c.num_layers; ++i) layers += attention + (c.moe.is_moe_layer(i) ? sparse : dense);
  return layers + h * c.vocab_size;
}

double flops_per_token(const ModelConfig& model, int64_t seq_len) {
  return 6.0 * flop_parameters(model) + 6.0 * model.num_layers * model.hidden_size * seq_len;
}

int64_t layer_parameters(const ModelConfig& m, int tp, int64_t experts) {
  const int64_t h = m.hidden_size, d = m.resolved_head_dim();
  const int64_t kv_heads = std::max<int64_t>(1, m.num_kv_heads / tp);  // replicated when tp > kv heads
  const int64_t q = h * m.num_heads * d / tp, kv = 2 * h * kv_heads * d, o = m.num_heads * d * h / tp;
  const int64_t bias = m.attention_bias ? (m.num_heads * d / tp + 2 * kv_heads * d) : 0;
  const int64_t dense = 3 * h * m.intermediate_size / tp;
  int64_t mlp = 0;
  for (int64_t i = 0; i < m.num_layers; ++i) mlp += m.moe.is_moe_layer(i) ? sparse_mlp_parameters(m, experts) : dense;
  const int64_t head_norms = m.qk_norm ? 2 * d : 0;
  return q + kv + o + bias + head_norms + mlp / m.num_layers + 2 * h;
}

int64_t layer_expert_parameters(const ModelConfig& m, int ep) {
  int64_t moe_layers = 0;
  for (int64_t i = 0; i < m.num_layers; ++i) moe_layers += m.moe.is_moe_layer(i);
  return moe_layers * (sparse_mlp_parameters(m, m.moe.experts / ep) - sparse_mlp_parameters(m, 0)) / m.num_layers;
}

}  // namespace lt
