#include "core/util/checksum.h"

#include <cstdio>
#include <cstring>

#include "core/util/mapped_file.h"

namespace lt {
namespace {
constexpr uint64_t kPrime = 0x100000001b3ULL;
}

void Checksum::mix_word(const uint8_t* bytes) {
  uint64_t word;
  std::memcpy(&word, bytes, 8);
  hash_ = (hash_ ^ word) * kPrime;
}

void Checksum::update(const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  total_ += size;
  // Words are taken at offsets that are multiples of 8 in the whole stream:
  // first complete a word begun by an earlier update, then whole words, then
  // keep the tail for the next update.
  while (size > 0 && pending_size_ > 0) {
    pending_[pending_size_++] = *p++, --size;
    if (pending_size_ == 8) mix_word(pending_), pending_size_ = 0;
  }
  for (; size >= 8; p += 8, size -= 8) mix_word(p);
  while (size > 0) pending_[pending_size_++] = *p++, --size;
}

std::string Checksum::hex() const {
  uint64_t hash = hash_;
  for (size_t i = 0; i < pending_size_; ++i) hash = (hash ^ pending_[i]) * kPrime;
  char buffer[17];
  std::snprintf(buffer, sizeof(buffer), "%016llx", static_cast<unsigned long long>(hash ^ total_));
  return buffer;
}

std::string file_checksum(const std::string& path) {
  MappedFile file(path);
  Checksum sum;
  sum.update(file.data(), file.size());
  return sum.hex();
}

}  // namespace lt
