#include "offload/activations/memory_policy.h"

#include "offload/activations/activation_offload.h"
#include "offload/activations/tiling.h"

namespace lt {
namespace {

// The layer's mode under the manual settings (memory.checkpoint full).
BlockMode manual_mode(const MemoryConfig& memory, int64_t layer) {
  if (memory.checkpoint != Recompute::full || layer % memory.checkpoint_every != 0) return BlockMode::keep;
  return memory.offload_activations ? BlockMode::swap : BlockMode::checkpoint;
}

}  // namespace

const char* mode_name(BlockMode mode) {
  switch (mode) {
    case BlockMode::keep:
      return "keep";
    case BlockMode::checkpoint:
      return "checkpoint";
    case BlockMode::swap:
      return "swap";
  }
  return "?";
}

void apply_memory_policy(LlamaForCausalLMImpl& model, const MemoryConfig& memory, const LayerFetch& fetch,
                         const LayerModes* modes) {
  std::shared_ptr<InputStash> host;
  if (memory.offload_activations || modes) host = std::make_shared<ActivationOffload>();
  Runner tiled_mlp;
  if (memory.mlp_tiles != "1")
    tiled_mlp = [setting = memory.mlp_tiles, width = model.config().hidden_size](const LayerPart& f,
                                                                                 const at::Tensor& x) {
      return tiled(f, x, tile_count(setting, x.size(1), width), 1);
    };
  model.set_runners([&](int64_t layer) {
    LayerRunners r;
    r.mlp = tiled_mlp;
    const BlockMode mode = modes ? modes->at(layer) : manual_mode(memory, layer);
    if (mode != BlockMode::keep) {
      // The layer's weights are fetched for forward and for the
      // recomputation.
      auto stash = mode == BlockMode::swap ? host : nullptr;
      r.layer = [stash, fetch, layer](const LayerPart& f, const at::Tensor& x) {
        if (!fetch) return checkpoint(f, x, stash);
        return checkpoint(
            [fetch, layer, f](const at::Tensor& t) {
              fetch(layer);
              return f(t);
            },
            x, stash);
      };
      return r;
    }
    if (fetch)  // kept: autograd holds the fetched weights until backward
      r.layer = [fetch, layer](const LayerPart& f, const at::Tensor& x) {
        fetch(layer);
        return f(x);
      };
    if (memory.checkpoint == Recompute::none || modes || layer % memory.checkpoint_every != 0) return r;
    const auto stash = memory.offload_activations ? host : nullptr;
    const Runner recompute = [stash](const LayerPart& f, const at::Tensor& x) { return checkpoint(f, x, stash); };
    if (memory.checkpoint == Recompute::attention) r.attention = recompute;
    if (memory.checkpoint == Recompute::mlp && !r.mlp) r.mlp = recompute;  // a tiled MLP recomputes already
    return r;
  });
}

at::Tensor head_loss(LlamaForCausalLMImpl& model, const at::Tensor& hidden, const at::Tensor& labels,
                     const TokenLoss& loss, const MemoryConfig& memory) {
  const int64_t tiles = tile_count(memory.loss_tiles, hidden.size(1), model.config().hidden_size);
  return tiled_linear_loss(hidden, model.head_weight(), labels, loss, tiles);
}

}  // namespace lt
