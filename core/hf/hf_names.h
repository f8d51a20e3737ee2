// How a Hugging Face checkpoint names our parameters. Our names are
// transformers' own in-memory names (model.layers.N.self_attn.q_proj.weight,
// mlp.experts.gate_up_proj), so most map 1:1. Two cases differ: a stacked
// experts' parameter is one tensor per expert and projection in every
// checkpoint (mlp.experts.E.gate_proj.weight, ...), and Mixtral's
// checkpoints call the MoE block block_sparse_moe and its projections
// w1 (gate), w3 (up) and w2 (down).
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

#include "core/config/config.h"

namespace lt {

// One checkpoint tensor and where it sits in one of our parameters.
struct HfPiece {
  std::string name;     // the checkpoint's tensor
  int64_t expert = -1;  // a stacked experts' parameter: the expert (global index); -1: the whole parameter
  int64_t offset = 0;   // the expert's rows [offset, offset + rows): its gate or up half of gate_up_proj
  int64_t rows = 0;
};

// The checkpoint tensors that make up `param` (a parameter of the whole
// model of `config`), every expert's included.
std::vector<HfPiece> hf_pieces(const std::string& param, const ModelConfig& config);

// Tensors of the whole model (its parameters, or their gradients) by our
// names, as the checkpoint names them, in the same order; views, not copies.
using NamedTensorList = std::vector<std::pair<std::string, at::Tensor>>;
NamedTensorList hf_tensors(const NamedTensorList& ours, const ModelConfig& config);

// A tensor a checkpoint may hold that no parameter reads: RoPE's inverse
// frequencies, a buffer the model computes from config.json.
bool hf_buffer(const std::string& name);

}  // namespace lt
