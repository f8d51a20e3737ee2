// Megatron's indexed dataset (.bin + .idx, "MMIDIDX" version 1), as written by
// Megatron's tools/preprocess_data.py, memory-mapped and validated on open.
//
// .idx: magic "MMIDIDX\0\0" | u64 version=1 | u8 dtype code | u64 sequence
// count | u64 document-index count | i32 sizes[n] | i64 byte pointers[n] |
// i64 document indices[d] (0, then the end sequence of each document).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/util/mapped_file.h"

namespace lt {

// Megatron's dtype codes; 6 and 7 (float64, float32) are not token ids.
enum class TokenDtype : uint8_t { U8 = 1, I8 = 2, I16 = 3, I32 = 4, I64 = 5, U16 = 8 };
size_t token_dtype_size(TokenDtype dtype);

class IndexedDataset {
 public:
  // prefix: path without the .bin / .idx suffix.
  explicit IndexedDataset(const std::string& prefix);

  int64_t num_sequences() const { return static_cast<int64_t>(sizes_.size()); }
  int64_t num_documents() const { return static_cast<int64_t>(doc_index_.size()) - 1; }
  std::vector<int64_t> sequence(int64_t i) const;
  // A document is the concatenation of its sequences (sentences).
  std::vector<int64_t> document(int64_t d) const;
  int64_t document_length(int64_t d) const;  // from the index alone

 private:
  void parse_index();
  void read_tokens(int64_t i, std::vector<int64_t>& out) const;

  std::string prefix_;
  std::unique_ptr<MappedFile> idx_, bin_;
  TokenDtype dtype_ = TokenDtype::U16;
  std::vector<int32_t> sizes_;
  std::vector<int64_t> pointers_;
  std::vector<int64_t> doc_index_;
};

}  // namespace lt
