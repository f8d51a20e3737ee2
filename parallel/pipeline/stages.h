// Which layers each pipeline stage holds: contiguous runs chosen to minimise
// the slowest stage's forward cost, counting the embedding on the first
// stage and the output head and loss on the last (for a small model the
// head weighs as much as several layers). Every stage gets a layer.
#pragma once
#include <vector>

#include "core/config/config.h"

namespace lt {

struct StageLayers {
  int64_t first = 0, count = 0;
};

std::vector<StageLayers> split_stages(const ModelConfig& model, int64_t seq_len, int stages);

// Forward FLOPs per token of a layer at `seq_len`, and of the head with its loss.
double layer_cost(const ModelConfig& model, int64_t seq_len);
double head_cost(const ModelConfig& model);

}  // namespace lt
