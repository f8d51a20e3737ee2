#include "core/attention/document_spans.h"

#include <algorithm>

#include "core/util/error.h"

namespace lt {
std::shared_ptr<const DocumentSpans> spans_at(std::vector<int64_t> starts, int64_t row_length,
                                              const at::Device& device) {
  auto spans = std::make_shared<DocumentSpans>();
  spans->row_length = row_length;
  for (size_t i = 1; i < starts.size(); ++i) spans->longest = std::max(spans->longest, starts[i] - starts[i - 1]);
  // Queued without waiting for the device (a pageable copy is staged at once).
  spans->cumulative =
      at::tensor(std::vector<int32_t>(starts.begin(), starts.end()), at::kInt).to(device, /*non_blocking=*/true);
  spans->starts = std::move(starts);
  return spans;
}

std::shared_ptr<const DocumentSpans> document_spans(const at::Tensor& documents) {
  LT_CHECK(documents.dim() == 2, "document spans: document ids must be [batch, seq]");
  const auto ids = documents.to(at::kCPU, at::kLong).contiguous();
  const int64_t rows = ids.size(0), length = ids.size(1);
  LT_CHECK(rows * length < (int64_t{1} << 31), "document spans: a micro-batch of 2^31 tokens or more");
  const int64_t* id = ids.data_ptr<int64_t>();
  std::vector<int64_t> starts;
  for (int64_t t = 0; t < rows * length; ++t)
    if (t % length == 0 || id[t] != id[t - 1]) starts.push_back(t);
  starts.push_back(rows * length);
  return spans_at(std::move(starts), length, documents.device());
}

std::shared_ptr<const DocumentSpans> DocumentSpans::rows(int64_t first, int64_t count) const {
  const int64_t begin = first * row_length, end = (first + count) * row_length;
  LT_CHECK(end <= tokens(), "document spans: rows beyond the batch");
  // Spans never cross a row's end, so the rows' spans are a run of these.
  const auto from = std::lower_bound(starts.begin(), starts.end(), begin);
  const auto to = std::lower_bound(starts.begin(), starts.end(), end);
  std::vector<int64_t> out;
  for (auto s = from; s != to; ++s) out.push_back(*s - begin);
  out.push_back(end - begin);
  return spans_at(std::move(out), row_length, cumulative.device());
}

std::shared_ptr<const DocumentSpans> DocumentSpans::to(const at::Device& device) const {
  auto moved = std::make_shared<DocumentSpans>(*this);
  moved->cumulative = cumulative.to(device);
  return moved;
}

}  // namespace lt
