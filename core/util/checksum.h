// Checksums of checkpoint files: XXH3-64 from xxHash, streaming, so a writer
// checksums what it writes. Checkpoints of format 3 used a 64-bit FNV-1a
// over 8-byte words; it stays readable.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

struct XXH3_state_s;

namespace lt {

// The algorithm new checkpoints record, and the one format-3 manifests imply.
inline constexpr const char* kChecksumAlgorithm = "xxh3-64";
inline constexpr const char* kLegacyChecksumAlgorithm = "fnv1a-64-words";

class Checksum {
 public:
  Checksum();
  ~Checksum();
  Checksum(const Checksum&) = delete;
  Checksum& operator=(const Checksum&) = delete;

  void update(const void* data, size_t size);
  std::string hex() const;  // of everything so far: 16 hex digits

 private:
  struct Free {
    void operator()(XXH3_state_s* state) const;
  };
  std::unique_ptr<XXH3_state_s, Free> state_;
};

// Of a whole file (read in blocks, not mapped), by `algorithm` (one of the two above;
// any other is an error naming the file).
std::string file_checksum(const std::string& path, const std::string& algorithm = kChecksumAlgorithm);

// XXH3-64 of a string.
std::string text_checksum(const std::string& text);

}  // namespace lt
