#include "offload/activations/memory_policy.h"

#include "offload/activations/activation_offload.h"
#include "offload/activations/tiling.h"
#include "offload/chunks/chunk_manager.h"

namespace lt {

void apply_memory_policy(LlamaForCausalLMImpl& model, const MemoryConfig& memory, ChunkManager* chunks) {
  std::shared_ptr<InputStash> stash;
  if (memory.offload_activations) stash = std::make_shared<ActivationOffload>();
  const Runner recompute = [stash](const LayerPart& f, const at::Tensor& x) { return checkpoint(f, x, stash); };
  Runner tiled_mlp;
  if (memory.mlp_tiles != "1")
    tiled_mlp = [setting = memory.mlp_tiles, width = model.config().hidden_size](const LayerPart& f, const at::Tensor& x) {
      return tiled(f, x, tile_count(setting, x.size(1), width), 1);
    };
  model.set_runners([&](int64_t layer) {
    LayerRunners r;
    r.mlp = tiled_mlp;
    if (memory.checkpoint == "none" || layer % memory.checkpoint_every != 0) return r;
    // With chunks, the layer's chunk comes to the device for forward and
    // for the recomputation (the config requires full recomputation then).
    if (memory.checkpoint == "full")
      r.layer = !chunks ? recompute : [stash, chunks, layer](const LayerPart& f, const at::Tensor& x) {
        return checkpoint([chunks, layer, f](const at::Tensor& t) {
          chunks->use(layer);
          return f(t);
        }, x, stash);
      };
    if (memory.checkpoint == "attention") r.attention = recompute;
    if (memory.checkpoint == "mlp" && !r.mlp) r.mlp = recompute;  // a tiled MLP recomputes already
    return r;
  });
}

at::Tensor head_loss(LlamaForCausalLMImpl& model, const at::Tensor& hidden, const at::Tensor& labels,
                     const TokenLoss& loss, const MemoryConfig& memory) {
  const int64_t tiles = tile_count(memory.loss_tiles, hidden.size(1), model.config().hidden_size);
  auto* m = &model;
  return tiled_sum(
      [m, labels, loss](const at::Tensor& tile, int64_t start) {
        return loss(at::linear(tile, m->head_weight()), labels.narrow(1, start, tile.size(1)));
      },
      hidden, tiles, 1);
}

}  // namespace lt
