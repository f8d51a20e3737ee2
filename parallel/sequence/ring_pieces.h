// How this rank's queries meet one K/V block of the ring as calls of the
// fused kernels, which take no positions and no mask: the query and key
// indices are cut into runs of consecutive positions (the zigzag layout
// gives two a rank), under packed documents also where a row's document
// changes, and each pair of runs of one document into the keys that precede
// every query (a full call) and the positions both hold (a causal call,
// square: CUDA's kernel aligns a causal mask to the bottom right, LibTorch's
// CPU kernel to the top left). Keys after a query are left out. Decided on
// the host, from host indices and document ids.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "core/attention/document_spans.h"

namespace lt {

struct Piece {
  int64_t row;                // the batch row (packed documents), or -1: every row
  int64_t q_start, q_length;  // tokens of the queries
  int64_t k_start, k_length;  // tokens of the block
  bool causal;
};

// Every visible (query, key) pair falls in exactly one piece. Indices:
// [seq] int64; documents: [batch, seq] int64 ids of the queries and the
// keys, or undefined (one document).
std::vector<Piece> ring_pieces(const at::Tensor& q_index, const at::Tensor& k_index, bool causal,
                               const at::Tensor& q_documents = {}, const at::Tensor& k_documents = {});

// A step's pieces of one kind (full or causal) laid end to end for one call
// of the variable-length kernel (flash_varlen): the tokens of each piece's
// queries and keys (row * seq + place in the row, on the device; a token may
// be in several pieces), and where each piece starts among them.
struct PieceBatch {
  bool causal;
  at::Tensor q_tokens, k_tokens;
  std::shared_ptr<const DocumentSpans> q_spans, k_spans;
};

// The pieces of `rows` rows of q_seq queries and k_seq keys, with what
// the kernel reads on `device` (copies queued without waiting for it).
std::vector<PieceBatch> batch_pieces(const std::vector<Piece>& pieces, int64_t rows, int64_t q_seq, int64_t k_seq,
                                     const at::Device& device);

}  // namespace lt
