// The memory settings (`memory` in a recipe) applied around a rank's model:
// which layers, or which parts of them, recompute their activations in
// backward instead of keeping them (and whether their inputs wait in host
// memory meanwhile), how the MLP is tiled over the sequence,
// and the loss computed over sequence tiles so the [seq, vocab] logits never
// exist whole. Every setting gives the same loss and gradients.
#pragma once
#include <functional>
#include <map>

#include "core/config/config.h"
#include "core/model/llama.h"
#include "offload/activations/tiling.h"

namespace lt {

// What a whole layer keeps for backward: everything, only its input
// (recomputed in backward), or nothing on the device (the input waits in
// host memory).
enum class BlockMode { keep, checkpoint, swap };
using LayerModes = std::map<int64_t, BlockMode>;  // layer index -> mode
const char* mode_name(BlockMode mode);

// What brings a layer's weights where it runs, called before the layer runs
// and before it is recomputed: the chunk manager's fetch (memory.offload_model)
// and ZeRO-3's gather.
using LayerFetch = std::function<void(int64_t layer)>;

// With `fetch`, every layer calls it before it runs or is recomputed.
// `modes` (the planner's choice, memory.plan: auto) replaces
// memory.checkpoint's and offload_activations' per-layer choice; tiling
// stays as configured.
void apply_memory_policy(LlamaForCausalLMImpl& model, const MemoryConfig& memory, const LayerFetch& fetch = {},
                         const LayerModes* modes = nullptr);

// The summed loss of the head over `hidden` [batch, seq, hidden] (the
// head's input) against labels [batch, seq], over memory.loss_tiles tiles.
at::Tensor head_loss(LlamaForCausalLMImpl& model, const at::Tensor& hidden, const at::Tensor& labels,
                     const TokenLoss& loss, const MemoryConfig& memory);

}  // namespace lt
