// Sequence tiling (ALST): a per-token computation run over tiles of the
// sequence, so only one tile's intermediates exist at a time, in forward
// and in backward. Used for the MLP (intermediate-sized
// activations) and for the logits and loss (vocabulary-sized ones).
#pragma once
#include "offload/activations/checkpoint.h"

namespace lt {

// f over `tiles` slices of x along `dim`, concatenated: f must act on each
// position independently.
at::Tensor tiled(const TensorFn& f, const at::Tensor& x, int64_t tiles, int64_t dim);

using TokenLoss = std::function<at::Tensor(const at::Tensor& logits, const at::Tensor& labels)>;

// The summed loss(x W^T, labels) over `tiles` slices of the sequence
// (dim 1 of x [batch, seq, hidden] and of labels [batch, seq]): each tile's
// logits exist only while its loss and their gradient are computed, in
// forward, and the gradients of x and W are formed there (W's accumulated
// by the matrix products themselves), so backward only scales them: the
// logits never exist whole and are never recomputed (the fused linear
// cross-entropy of Liger; ALST's tiled loss).
at::Tensor tiled_linear_loss(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& labels,
                             const TokenLoss& loss, int64_t tiles);

// Tiles for a setting ("auto" or a count) at `length` positions of width
// `width`: auto gives about length / width (ALST: one tile holds about a
// hidden-square of activations), at least one, at most `length`.
int64_t tile_count(const std::string& setting, int64_t length, int64_t width);

}  // namespace lt
