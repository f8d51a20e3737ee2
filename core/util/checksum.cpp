#include "core/util/checksum.h"

#include <xxhash.h>

#include <cstdint>
#include <cstdio>
#include <cstring>

#include "core/util/error.h"
#include "core/util/mapped_file.h"

namespace lt {
namespace {

std::string hex64(uint64_t value) {
  char buffer[17];
  std::snprintf(buffer, sizeof(buffer), "%016llx", static_cast<unsigned long long>(value));
  return buffer;
}

// Format 3's checksum: FNV-1a over little-endian 8-byte words, then the tail
// bytes, xor the length. Only read, never written.
std::string legacy_checksum(const uint8_t* p, size_t size) {
  constexpr uint64_t kPrime = 0x100000001b3ULL;
  uint64_t hash = 0xcbf29ce484222325ULL;
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t word;
    std::memcpy(&word, p + i, 8);
    hash = (hash ^ word) * kPrime;
  }
  for (; i < size; ++i) hash = (hash ^ p[i]) * kPrime;
  return hex64(hash ^ size);
}

}  // namespace

void Checksum::Free::operator()(XXH3_state_s* state) const { XXH3_freeState(state); }

Checksum::Checksum() : state_(XXH3_createState()) {
  check(state_ != nullptr, "checksum: out of memory");
  XXH3_64bits_reset(state_.get());
}

Checksum::~Checksum() = default;

void Checksum::update(const void* data, size_t size) { XXH3_64bits_update(state_.get(), data, size); }

std::string Checksum::hex() const { return hex64(XXH3_64bits_digest(state_.get())); }

std::string file_checksum(const std::string& path, const std::string& algorithm) {
  MappedFile file(path);
  if (algorithm == kLegacyChecksumAlgorithm) return legacy_checksum(file.data(), file.size());
  if (algorithm != kChecksumAlgorithm)
    fail(path + ": checksum algorithm '" + algorithm + "' is unknown to this build (it reads " + kChecksumAlgorithm +
         " and " + kLegacyChecksumAlgorithm + ")");
  return hex64(XXH3_64bits(file.data(), file.size()));
}

std::string text_checksum(const std::string& text) { return hex64(XXH3_64bits(text.data(), text.size())); }

}  // namespace lt
