// The one attention interface every layout (single device, Ulysses, ring,
// zigzag) sits on: q, k, v in [batch, seq, heads, head_dim] plus a mask
// description, returning the output and the log-sum-exp of each query row.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <string>

#include "core/attention/document_spans.h"
#include "core/config/config.h"

namespace lt {

struct AttentionMask {
  bool causal = true;
  // Document id of each token, [batch, seq] int64. Undefined: one document.
  at::Tensor q_document, k_document;
  // Global token index of each query / key, [seq] int64, deciding causality
  // for blocks that are not at the same place (ring, zigzag). Undefined: 0..seq-1.
  at::Tensor q_index, k_index;
  // Where the documents of the whole sequences q_document belongs to start,
  // found on the host (Batch::spans): the fused kernels take them when the
  // queries are those whole sequences. Null: found from q_document.
  std::shared_ptr<const DocumentSpans> spans;

  bool has_documents() const { return q_document.defined(); }
  bool has_indices() const { return q_index.defined(); }
};

struct AttentionOptions {
  AttentionKernel kernel = AttentionKernel::automatic;
  int64_t block = 512;  // blockwise kernel: queries and keys per block
};

struct AttentionResult {
  at::Tensor out;  // [batch, seq_q, heads, head_dim], dtype of q
  at::Tensor lse;  // [batch, heads, seq_q], fp32; -inf for rows that see no key
};

// The kernels take [batch, heads, seq, head_dim]; ours are [batch, seq, heads, head_dim].
inline at::Tensor heads_first(const at::Tensor& t) { return t.transpose(1, 2); }

// k and v may have fewer heads than q (grouped-query attention): query head h
// reads kv head h / (heads / kv_heads), as HF's repeat_kv. Never builds a
// seq x seq matrix: memory is O(seq x block).
AttentionResult attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                          const AttentionOptions& options = {});

// How a layer attends: attention() on one device; parallel/sequence supplies
// the sequence-parallel versions (Ulysses, ring), with this same signature.
using AttentionFn = std::function<AttentionResult(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                  const AttentionMask&, const AttentionOptions&)>;

}  // namespace lt
