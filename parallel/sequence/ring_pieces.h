// How this rank's queries meet one K/V block of the ring as calls of the
// fused kernels, which take no positions: the query and key indices are cut
// into runs of consecutive positions (the zigzag layout gives two a rank),
// and each pair of runs into the keys that precede every query (a full call)
// and the positions both share (a causal call, square: CUDA's kernel aligns
// a causal mask to the bottom right, LibTorch's CPU kernel to the top left).
// Keys after a query are left out. Decided on the host, from host indices.
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace lt {

struct Piece {
  int64_t q_start, q_length;  // rows of the queries
  int64_t k_start, k_length;  // rows of the block
  bool causal;
};

// Every visible (query, key) pair falls in exactly one piece. Indices: [seq] int64.
std::vector<Piece> ring_pieces(const at::Tensor& q_index, const at::Tensor& k_index, bool causal);

}  // namespace lt
