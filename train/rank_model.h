// The model as one rank of the mesh holds it: its pipeline stage's layers,
// its tensor-parallel slices and region edges, its sequence-parallel
// attention, its memory policy (recomputation, tiling), and the loss its
// last stage computes (vocabulary-parallel under tp). Built and initialised identically to the single-rank model, so
// every rank holds exactly its part of the same weights.
#pragma once
#include <functional>

#include "core/config/config.h"
#include "core/model/llama.h"
#include "offload/activations/memory_policy.h"
#include "parallel/mesh/mesh.h"

namespace lt {

using LossFn = std::function<at::Tensor(const at::Tensor& logits, const at::Tensor& labels)>;

struct RankModel {
  LlamaForCausalLM model{nullptr};
  LossFn loss_sum;   // summed token losses of a micro-batch (the last stage's)
  LayerFetch fetch;  // brings a layer's weights before it runs; empty: they are there
};

// This rank's model, initialised from config.train.seed, on `device`, its
// attention, runners and memory policy fixed from here on (temporary
// changes: ScopedLayers). `fetch`, if given, brings a layer's weights
// before it runs and before it is recomputed (model_state.h: its offloaded
// chunk, ZeRO-3's all-gather).
RankModel build_rank_model(const Config& config, Mesh& mesh, at::Device device = at::kCPU,
                           const LayerFetch& fetch = {});

}  // namespace lt
