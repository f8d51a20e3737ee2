#include "parallel/pipeline/stages.h"

#include <algorithm>
#include <limits>

namespace lt {

double layer_cost(const ModelConfig& m, int64_t seq_len) {
  const double h = m.hidden_size, d = m.resolved_head_dim();
  const double projections = h * d * (2.0 * m.num_heads + 2.0 * m.num_kv_heads) + 3.0 * h * m.intermediate_size;
  // Causal attention: q k^T and p v over half the sequence on average.
  return 2.0 * projections + 2.0 * m.num_heads * d * seq_len;
}

double head_cost(const ModelConfig& m) { return 2.0 * m.hidden_size * m.vocab_size + 5.0 * m.vocab_size; }

std::vector<StageLayers> split_stages(const ModelConfig& m, int64_t seq_len, int stages) {
  const int64_t L = m.num_layers;
  const double layer = layer_cost(m, seq_len), embedding = m.hidden_size, head = head_cost(m);
  // cost(s, a, b): stage s holding layers [a, b).
  auto cost = [&](int s, int64_t a, int64_t b) {
    return (b - a) * layer + (s == 0 ? embedding : 0) + (s == stages - 1 ? head : 0);
  };
  // best[s][i]: the least possible slowest stage when stages 0..s-1 hold layers [0, i).
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> best(stages + 1, std::vector<double>(L + 1, inf));
  std::vector<std::vector<int64_t>> cut(stages + 1, std::vector<int64_t>(L + 1, 0));
  best[0][0] = 0;
  for (int s = 1; s <= stages; ++s)
    for (int64_t i = s; i <= L; ++i)
      for (int64_t j = s - 1; j < i; ++j) {
        const double slowest = std::max(best[s - 1][j], cost(s - 1, j, i));
        // Ties go to the split with more layers early (the last stage holds the head).
        if (slowest <= best[s][i]) best[s][i] = slowest, cut[s][i] = j;
      }
  std::vector<StageLayers> out(stages);
  for (int64_t s = stages, i = L; s > 0; i = cut[s][i], --s) out[s - 1] = {cut[s][i], i - cut[s][i]};
  return out;
}

}  // namespace lt
