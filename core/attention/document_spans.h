// Packed documents as the variable-length attention kernels take them: the
// rows of a batch laid end to end, cut wherever the document id changes and
// wherever a row ends. The cuts are found on the host, from the batch before
// it moves to the device, once per micro-batch: no layer then waits on the
// device to read the document ids (flash-attention's cu_seqlens, as
// torchtitan and Megatron pass them).
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <vector>

namespace lt {

struct DocumentSpans {
  int64_t row_length = 0;       // tokens per row
  std::vector<int64_t> starts;  // where each span starts in the laid-out rows, then where the last one ends
  int64_t longest = 0;          // tokens of the longest span
  at::Tensor cumulative;        // `starts` as int32 on the batch's device: the kernels' cumulative lengths

  int64_t tokens() const { return starts.back(); }
  int64_t count() const { return static_cast<int64_t>(starts.size()) - 1; }
  // The spans of rows [first, first + count), and the same on `device`.
  std::shared_ptr<const DocumentSpans> rows(int64_t first, int64_t count) const;
  std::shared_ptr<const DocumentSpans> to(const at::Device& device) const;
};

// Spans at `starts` (where each starts, then where the last one ends) in
// rows of `row_length` tokens (0: the spans are not cut from rows), with
// `cumulative` on `device`.
std::shared_ptr<const DocumentSpans> spans_at(std::vector<int64_t> starts, int64_t row_length,
                                              const at::Device& device);

// The spans of `documents` ([batch, seq] int64 ids; read on the host, so a
// device tensor is copied back first), with `cumulative` on its device.
std::shared_ptr<const DocumentSpans> document_spans(const at::Tensor& documents);

}  // namespace lt
