#include "parallel/sequence/sequence_shard.h"

#include "core/util/error.h"

namespace lt {

int64_t sequence_parts(const SequenceLayout& layout) {
  return static_cast<int64_t>(layout.ulysses) * layout.ring * layout.tp * (layout.zigzag && layout.ring > 1 ? 2 : 1);
}

int64_t padded_length(int64_t length, const SequenceLayout& layout) {
  const int64_t parts = sequence_parts(layout);
  return (length + parts - 1) / parts * parts;
}

Batch pad_sequences(const Batch& batch, const SequenceLayout& layout) {
  const int64_t rows = batch.tokens.size(0), length = batch.tokens.size(1);
  const int64_t extra = padded_length(length, layout) - length;
  if (extra == 0) return batch;
  auto options = batch.tokens.options();
  auto pad = [&](const at::Tensor& t, int64_t value) {
    return t.defined() ? at::cat({t, at::full({rows, extra}, value, options)}, 1) : t;
  };
  Batch out{pad(batch.tokens, 0),
            pad(batch.labels, kIgnoreIndex),
            at::cat({batch.positions, at::arange(length, length + extra, options).expand({rows, extra})}, 1),
            pad(batch.documents, -1),
            batch.index,
            nullptr};
  LT_CHECK(!batch.index.defined(), "pad_sequences: pad whole sequences, before sharding");
  // The padding is a document of its own: the spans change with it.
  if (out.documents.defined()) out.spans = document_spans(out.documents);
  return out;
}

at::Tensor sequence_columns(int64_t length, const SequenceLayout& layout, int u, int r) {
  const int64_t ring_part = length / layout.ring;
  LT_CHECK(length % sequence_parts(layout) == 0,
           "sequence of " + std::to_string(length) + " tokens does not split over the sequence-parallel ranks");
  at::Tensor part;
  if (layout.zigzag && layout.ring > 1) {
    const int64_t chunk = length / (2 * layout.ring);
    part = at::cat({at::arange(r * chunk, (r + 1) * chunk, at::kLong),
                    at::arange((2 * layout.ring - 1 - r) * chunk, (2 * layout.ring - r) * chunk, at::kLong)});
  } else {
    part = at::arange(r * ring_part, (r + 1) * ring_part, at::kLong);
  }
  const int64_t piece = ring_part / layout.ulysses;
  return part.narrow(0, u * piece, piece).contiguous();
}

Batch shard_sequences(const Batch& batch, const at::Tensor& columns) {
  auto take = [&](const at::Tensor& t) { return t.defined() ? t.index_select(1, columns.to(t.device())) : t; };
  Batch out{take(batch.tokens), take(batch.labels), take(batch.positions), take(batch.documents), columns, batch.spans};
  if (batch.index.defined()) out.index = batch.index.index_select(0, columns);
  return out;
}

}  // namespace lt
