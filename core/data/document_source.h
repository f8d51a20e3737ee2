// An endless, deterministic stream of documents: document(i) depends only on
// i and the seed, so a data position is one integer and resuming is exact.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "core/config/config.h"

namespace lt {

class DocumentSource {
 public:
  virtual ~DocumentSource() = default;
  virtual std::vector<int64_t> document(int64_t index) const = 0;
};

enum class Split { Train, Eval };

// The source a recipe's data section describes (passkey corpus or indexed files).
std::unique_ptr<DocumentSource> make_document_source(const DataConfig& data, int64_t vocab_size, uint64_t seed,
                                                     Split split);

}  // namespace lt
