#include "core/util/checksum.h"

#include <cstdio>
#include <cstring>

#include "core/util/mapped_file.h"

namespace lt {

uint64_t checksum64(const uint8_t* data, size_t size) {
  constexpr uint64_t kPrime = 0x100000001b3ULL;
  uint64_t hash = 0xcbf29ce484222325ULL;
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t word;
    std::memcpy(&word, data + i, 8);
    hash = (hash ^ word) * kPrime;
  }
  for (; i < size; ++i) hash = (hash ^ data[i]) * kPrime;
  return hash ^ size;
}

std::string checksum_hex(uint64_t value) {
  char buffer[17];
  std::snprintf(buffer, sizeof(buffer), "%016llx", static_cast<unsigned long long>(value));
  return buffer;
}

std::string file_checksum(const std::string& path) {
  MappedFile file(path);
  return checksum_hex(checksum64(file.data(), file.size()));
}

}  // namespace lt
