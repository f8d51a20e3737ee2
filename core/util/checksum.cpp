#include "core/util/checksum.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/util/error.h"

namespace lt {
namespace {

std::string hex64(uint64_t value) {
  char buffer[17];
  std::snprintf(buffer, sizeof(buffer), "%016llx", static_cast<unsigned long long>(value));
  return buffer;
}

// Format 3's checksum: FNV-1a over little-endian 8-byte words, then the tail
// bytes, xor the length. Only read, never written; fed in blocks whose sizes
// are multiples of 8 but the last's.
class LegacyChecksum {
 public:
  void update(const uint8_t* p, size_t size) {
    size_t i = 0;
    for (; i + 8 <= size; i += 8) {
      uint64_t word;
      std::memcpy(&word, p + i, 8);
      hash_ = (hash_ ^ word) * kPrime;
    }
    for (; i < size; ++i) hash_ = (hash_ ^ p[i]) * kPrime;
    size_ += size;
  }
  std::string hex() const { return hex64(hash_ ^ size_); }

 private:
  static constexpr uint64_t kPrime = 0x100000001b3ULL;
  uint64_t hash_ = 0xcbf29ce484222325ULL, size_ = 0;
};

// Feeds `update` the whole file in full 4 MiB blocks (the last may be
// shorter) read into a buffer, so that checking a file adds its pages to the
// page cache, not to this process.
template <typename Update>
void read_blocks(const std::string& path, Update update) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path + ": cannot open: " + std::strerror(errno));
  std::vector<uint8_t> buffer(size_t{4} << 20);
  for (bool end = false; !end;) {
    size_t filled = 0;
    while (filled < buffer.size()) {
      const ssize_t n = ::read(fd, buffer.data() + filled, buffer.size() - filled);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int error = errno;
        ::close(fd);
        fail(path + ": cannot read: " + std::strerror(error));
      }
      if (n == 0) {
        end = true;
        break;
      }
      filled += static_cast<size_t>(n);
    }
    update(buffer.data(), filled);
  }
  ::close(fd);
}

}  // namespace

void Checksum::Free::operator()(XXH3_state_s* state) const { XXH3_freeState(state); }

Checksum::Checksum() : state_(XXH3_createState()) {
  LT_CHECK(state_ != nullptr, "checksum: out of memory");
  XXH3_64bits_reset(state_.get());
}

Checksum::~Checksum() = default;

void Checksum::update(const void* data, size_t size) { XXH3_64bits_update(state_.get(), data, size); }

std::string Checksum::hex() const { return hex64(XXH3_64bits_digest(state_.get())); }

std::string file_checksum(const std::string& path, const std::string& algorithm) {
  if (algorithm == kLegacyChecksumAlgorithm) {
    LegacyChecksum sum;
    read_blocks(path, [&](const uint8_t* p, size_t n) { sum.update(p, n); });
    return sum.hex();
  }
  if (algorithm != kChecksumAlgorithm)
    fail(path + ": checksum algorithm '" + algorithm + "' is unknown to this build (it reads " + kChecksumAlgorithm +
         " and " + kLegacyChecksumAlgorithm + ")");
  Checksum sum;
  read_blocks(path, [&](const uint8_t* p, size_t n) { sum.update(p, n); });
  return sum.hex();
}

std::string text_checksum(const std::string& text) { return hex64(XXH3_64bits(text.data(), text.size())); }

}  // namespace lt
