// Packs a document stream into fixed-length sequences. Labels are shifted
// here, before any later sharding: the last token of a document gets no
// label, and a document cut at the end of a sequence keeps its true next
// token as the label. Each sequence carries document ids and positions.
#pragma once
#include "core/config/config.h"
#include "core/data/batch.h"
#include "core/data/document_source.h"

namespace lt {

// Where the packer is in the stream: the whole data state of a checkpoint.
struct DataPosition {
  int64_t document = 0;  // next document index
  int64_t offset = 0;    // tokens of it already consumed
};

class Packer {
 public:
  Packer(const DocumentSource& source, const DataConfig& config, DataPosition start = {});

  Batch next(int64_t sequences, int64_t length);
  // Unpacked (data.packing: adaptive): the next documents, one row each,
  // `tokens` in all; a document longer than `max_length`, or than the
  // tokens left, is cut and continues in the next row, as in a packed
  // sequence.
  std::vector<Batch> documents(int64_t tokens, int64_t max_length);
  const DataPosition& position() const { return position_; }

 private:
  // `source_length`: the length documents are drawn for (DocumentSource).
  void fill_sequence(int64_t length, int64_t source_length, Batch& batch, int64_t row);
  const std::vector<int64_t>& current(int64_t length);

  const DocumentSource& source_;
  DataConfig config_;
  DataPosition position_;
  std::vector<int64_t> doc_;
  int64_t doc_loaded_ = -1, doc_loaded_length_ = -1;
};

}  // namespace lt
