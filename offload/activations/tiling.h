// Sequence tiling (ALST): a per-token computation run over tiles of the
// sequence, each checkpointed, so only one tile's intermediates exist at a
// time, in forward and in backward. Used for the MLP (intermediate-sized
// activations) and for the logits and loss (vocabulary-sized ones).
#pragma once
#include "offload/activations/checkpoint.h"

namespace lt {

// f over `tiles` slices of x along `dim`, concatenated: f must act on each
// position independently.
at::Tensor tiled(const TensorFn& f, const at::Tensor& x, int64_t tiles, int64_t dim);

// f(tile, start) for a tile of x that begins at position `start` along its dim.
using TileFn = std::function<at::Tensor(const at::Tensor& tile, int64_t start)>;

// The sum of f's scalar results over `tiles` slices of x along `dim` (a loss).
at::Tensor tiled_sum(const TileFn& f, const at::Tensor& x, int64_t tiles, int64_t dim);

// Tiles for a setting ("auto" or a count) at `length` positions of width
// `width`: auto gives about length / width (ALST: one tile holds about a
// hidden-square of activations), at least one, at most `length`.
int64_t tile_count(const std::string& setting, int64_t length, int64_t width);

}  // namespace lt
