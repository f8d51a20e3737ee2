#include "core/data/packer.h"

#include <algorithm>

#include "core/util/error.h"

namespace lt {

Batch Batch::rows(int64_t start, int64_t count) const {
  auto slice = [&](const at::Tensor& t) { return t.defined() ? t.narrow(0, start, count) : t; };
  Batch out{slice(tokens), slice(labels), slice(positions), slice(documents), index, nullptr};
  if (spans) out.spans = spans->rows(start, count);
  return out;
}

Batch Batch::to(const at::Device& device) const {
  auto move = [&](const at::Tensor& t) { return t.defined() ? t.to(device) : t; };
  Batch out{move(tokens), move(labels), move(positions), documents, index, nullptr};
  if (spans) out.spans = spans->to(device);
  return out;
}

Packer::Packer(const DocumentSource& source, const DataConfig& config, DataPosition start)
    : source_(source), config_(config), position_(start) {}

// The document at the position, past any empty ones. The position may come
// from a checkpoint: it must lie inside its document.
const std::vector<int64_t>& Packer::current(int64_t length) {
  constexpr int64_t kMostEmptyInARow = 1 << 20;
  for (int64_t skipped = 0;; ++skipped) {
    if (position_.document < 0 || position_.offset < 0)
      fail("data position: document " + std::to_string(position_.document) + ", offset " +
           std::to_string(position_.offset) + " is not a position in a data stream");
    if (doc_loaded_ != position_.document || doc_loaded_length_ != length) {
      doc_ = source_.document(position_.document, length);
      doc_loaded_ = position_.document;
      doc_loaded_length_ = length;
    }
    if (!doc_.empty() || position_.offset != 0) break;
    if (skipped == kMostEmptyInARow)
      fail("data: document " + std::to_string(position_.document) + " and the " + std::to_string(skipped) +
           " before it are empty: the data holds no tokens to train on");
    position_ = {position_.document + 1, 0};
  }
  if (position_.offset >= static_cast<int64_t>(doc_.size()))
    fail("data position: offset " + std::to_string(position_.offset) + " lies past the end of document " +
         std::to_string(position_.document) + " (" + std::to_string(doc_.size()) +
         " tokens): the checkpoint's data position does not belong to this recipe's data");
  return doc_;
}

namespace {

Batch empty_batch(int64_t rows, int64_t length) {
  auto options = at::TensorOptions().dtype(at::kLong);
  return {at::empty({rows, length}, options),
          at::empty({rows, length}, options),
          at::empty({rows, length}, options),
          at::empty({rows, length}, options),
          at::Tensor(),
          nullptr};
}

}  // namespace

void Packer::fill_sequence(int64_t length, int64_t source_length, Batch& batch, int64_t row) {
  int64_t* tokens = batch.tokens[row].data_ptr<int64_t>();
  int64_t* labels = batch.labels[row].data_ptr<int64_t>();
  int64_t* positions = batch.positions[row].data_ptr<int64_t>();
  int64_t* documents = batch.documents[row].data_ptr<int64_t>();
  const bool whole = config_.packing == Packing::whole;
  int64_t filled = 0, segment = 0;
  while (filled < length) {
    const auto& doc = current(source_length);
    const int64_t remaining = static_cast<int64_t>(doc.size()) - position_.offset;
    // "whole": a document that does not fit starts the next sequence (unless
    // it could never fit), and the rest of this one is padding.
    if (whole && filled > 0 && position_.offset == 0 && remaining > length - filled && remaining <= length) {
      for (int64_t t = filled; t < length; ++t) {
        tokens[t] = 0, labels[t] = kIgnoreIndex, positions[t] = t - filled, documents[t] = segment;
      }
      return;
    }
    const int64_t take = std::min(remaining, length - filled);
    const bool continues = position_.offset + take < static_cast<int64_t>(doc.size());
    for (int64_t t = 0; t < take; ++t) {
      const int64_t at = filled + t, src = position_.offset + t;
      tokens[at] = doc[src];
      labels[at] = (t + 1 < take || continues) ? doc[src + 1] : kIgnoreIndex;
      positions[at] = config_.reset_position_ids ? t : at;
      documents[at] = segment;
    }
    filled += take;
    ++segment;
    position_.offset += take;
    if (!continues) position_ = {position_.document + 1, 0};
  }
}

Batch Packer::next(int64_t sequences, int64_t length) {
  Batch batch = empty_batch(sequences, length);
  for (int64_t i = 0; i < sequences; ++i) fill_sequence(length, length, batch, i);
  if (config_.document_mask) batch.spans = document_spans(batch.documents);
  else batch.documents = at::Tensor();
  return batch;
}

std::vector<Batch> Packer::documents(int64_t tokens, int64_t max_length) {
  std::vector<Batch> out;
  while (tokens > 0) {
    const auto& doc = current(max_length);
    const int64_t remaining = static_cast<int64_t>(doc.size()) - position_.offset;
    const int64_t length = std::min({remaining, max_length, tokens});
    out.push_back(empty_batch(1, length));
    fill_sequence(length, max_length, out.back(), 0);  // exactly this document's next `length` tokens
    out.back().documents = at::Tensor();               // one document: no mask needed
    tokens -= length;
  }
  return out;
}

}  // namespace lt
