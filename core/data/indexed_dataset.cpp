#include "core/data/indexed_dataset.h"

#include <cstring>

#include "core/util/error.h"

namespace lt {
namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};

// Sequential little-endian reader over the .idx bytes, failing with the file name.
class Cursor {
 public:
  Cursor(const MappedFile& file) : file_(file) {}
  void read(void* out, size_t bytes, const char* what) {
    if (pos_ + bytes > file_.size())
      fail(file_.path() + ": truncated index: cannot read " + what + " at byte " + std::to_string(pos_) +
           " (file has " + std::to_string(file_.size()) + " bytes); rebuild it with preprocess_data.py");
    if (bytes) std::memcpy(out, file_.data() + pos_, bytes);  // an empty vector's data() may be null
    pos_ += bytes;
  }
  template <class T>
  T value(const char* what) {
    T v;
    read(&v, sizeof(T), what);
    return v;
  }
  size_t pos() const { return pos_; }

 private:
  const MappedFile& file_;
  size_t pos_ = 0;
};

}  // namespace

size_t token_dtype_size(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::U8:
    case TokenDtype::I8:
      return 1;
    case TokenDtype::I16:
    case TokenDtype::U16:
      return 2;
    case TokenDtype::I32:
      return 4;
    case TokenDtype::I64:
      return 8;
  }
  return 0;
}

IndexedDataset::IndexedDataset(const std::string& prefix) : prefix_(prefix) {
  idx_ = std::make_unique<MappedFile>(prefix + ".idx");
  bin_ = std::make_unique<MappedFile>(prefix + ".bin");
  parse_index();
}

void IndexedDataset::parse_index() {
  const std::string& name = idx_->path();
  Cursor cursor(*idx_);
  char magic[9];
  cursor.read(magic, sizeof(magic), "the magic");
  if (std::memcmp(magic, kMagic, sizeof(magic)) != 0)
    fail(name + ": not a Megatron indexed dataset (magic is not MMIDIDX)");
  const auto version = cursor.value<uint64_t>("the version");
  if (version != 1) fail(name + ": unsupported index version " + std::to_string(version) + " (only 1 is known)");
  const auto code = cursor.value<uint8_t>("the dtype code");
  if (!(code >= 1 && code <= 5) && code != 8)
    fail(name + ": dtype code " + std::to_string(code) + " is not an integer token type (1-5 or 8)");
  dtype_ = static_cast<TokenDtype>(code);
  const auto n = cursor.value<uint64_t>("the sequence count");
  const auto d = cursor.value<uint64_t>("the document count");
  const uint64_t expected = cursor.pos() + n * (4 + 8) + d * 8;
  if (n > idx_->size() || d > idx_->size() || expected != idx_->size())
    fail(name + ": index size " + std::to_string(idx_->size()) + " bytes does not match its header (" +
         std::to_string(n) + " sequences, " + std::to_string(d) +
         " document entries); the file is truncated or corrupt");
  sizes_.resize(n);
  pointers_.resize(n);
  doc_index_.resize(d);
  cursor.read(sizes_.data(), n * 4, "the sizes");
  cursor.read(pointers_.data(), n * 8, "the pointers");
  cursor.read(doc_index_.data(), d * 8, "the document indices");

  const size_t item = token_dtype_size(dtype_);
  for (uint64_t i = 0; i < n; ++i) {
    if (sizes_[i] < 0 || pointers_[i] < 0 ||
        static_cast<uint64_t>(pointers_[i]) + static_cast<uint64_t>(sizes_[i]) * item > bin_->size())
      fail(bin_->path() + ": sequence " + std::to_string(i) + " lies outside the data file (" +
           std::to_string(bin_->size()) + " bytes); the .bin is truncated or does not belong to this .idx");
  }
  if (d < 1 || doc_index_.front() != 0 || doc_index_.back() != static_cast<int64_t>(n))
    fail(name + ": document indices must start at 0 and end at the sequence count " + std::to_string(n));
  for (uint64_t i = 1; i < d; ++i)
    if (doc_index_[i] < doc_index_[i - 1])
      fail(name + ": document indices are not sorted at entry " + std::to_string(i));
}

void IndexedDataset::read_tokens(int64_t i, std::vector<int64_t>& out) const {
  const uint8_t* p = bin_->data() + pointers_[i];
  const int64_t count = sizes_[i];
  auto append = [&](auto type_tag) {
    using T = decltype(type_tag);
    for (int64_t t = 0; t < count; ++t) {
      T v;
      std::memcpy(&v, p + t * sizeof(T), sizeof(T));
      out.push_back(static_cast<int64_t>(v));
    }
  };
  switch (dtype_) {
    case TokenDtype::U8:
      append(uint8_t{});
      break;
    case TokenDtype::I8:
      append(int8_t{});
      break;
    case TokenDtype::I16:
      append(int16_t{});
      break;
    case TokenDtype::U16:
      append(uint16_t{});
      break;
    case TokenDtype::I32:
      append(int32_t{});
      break;
    case TokenDtype::I64:
      append(int64_t{});
      break;
  }
}

std::vector<int64_t> IndexedDataset::sequence(int64_t i) const {
  LT_CHECK(i >= 0 && i < num_sequences(), prefix_ + ": sequence " + std::to_string(i) + " out of range");
  std::vector<int64_t> out;
  read_tokens(i, out);
  return out;
}

std::vector<int64_t> IndexedDataset::document(int64_t d) const {
  LT_CHECK(d >= 0 && d < num_documents(), prefix_ + ": document " + std::to_string(d) + " out of range");
  std::vector<int64_t> out;
  for (int64_t i = doc_index_[d]; i < doc_index_[d + 1]; ++i) read_tokens(i, out);
  return out;
}

int64_t IndexedDataset::document_length(int64_t d) const {
  int64_t length = 0;
  for (int64_t i = doc_index_[d]; i < doc_index_[d + 1]; ++i) length += sizes_[i];
  return length;
}

}  // namespace lt
