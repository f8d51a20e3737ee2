// A batch of packed training sequences, labels already shifted.
#pragma once
#include <ATen/ATen.h>

#include <memory>

#include "core/attention/document_spans.h"

namespace lt {

constexpr int64_t kIgnoreIndex = -100;

struct Batch {
  at::Tensor tokens;     // [batch, seq] int64
  at::Tensor labels;     // [batch, seq] int64, next token or kIgnoreIndex
  at::Tensor positions;  // [batch, seq] int64, restart per document unless disabled
  at::Tensor documents;  // [batch, seq] int64 segment ids; undefined when documents may attend to each other
  // [seq] int64: where each column stands in the full sequence, for a shard
  // of it (sequence parallelism); undefined: the whole sequence, 0..seq-1.
  at::Tensor index;
  // The documents of the whole sequences these rows are (before any
  // sequence-parallel cut), found on the host; null: not known.
  std::shared_ptr<const DocumentSpans> spans;

  int64_t size() const { return tokens.size(0); }
  Batch rows(int64_t start, int64_t count) const;
  // Tokens, labels, positions and the spans' offsets move; documents and
  // index stay on the host, where the attention kernels decide which blocks
  // to compute without waiting for the device (a kernel that needs them
  // there copies them, queued).
  Batch to(const at::Device& device) const;
  int64_t valid_tokens() const { return labels.ne(kIgnoreIndex).sum().item<int64_t>(); }
};

}  // namespace lt
