// 64-bit FNV-1a over 8-byte little-endian words (then the tail bytes), mixed
// with the length: a fast checksum that catches truncation and bit rot in
// checkpoint files. Streaming, so a writer checksums what it writes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace lt {

class Checksum {
 public:
  void update(const void* data, size_t size);
  std::string hex() const;  // of everything so far

 private:
  void mix_word(const uint8_t* bytes);

  uint64_t hash_ = 0xcbf29ce484222325ULL;
  uint8_t pending_[8] = {};  // bytes of a word not yet complete
  size_t pending_size_ = 0;
  uint64_t total_ = 0;
};

// Checksum of a whole file (memory-mapped).
std::string file_checksum(const std::string& path);

}  // namespace lt
