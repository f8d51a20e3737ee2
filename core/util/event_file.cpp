#include "core/util/event_file.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "core/util/error.h"

namespace lt {
namespace {

// Protocol-buffer wire format: a field's key is (number << 3) | wire type.
constexpr char kFixed64 = 1, kVarint = 0, kLengthDelimited = 2, kFixed32 = 5;
constexpr char key(int field, char wire_type) { return static_cast<char>(field << 3 | wire_type); }

void put_varint(std::string& out, uint64_t value) {
  for (; value >= 0x80; value >>= 7) out.push_back(static_cast<char>(value | 0x80));
  out.push_back(static_cast<char>(value));
}

// Little-endian, whatever the host's order.
template <class Bits>
void put_fixed(std::string& out, Bits bits) {
  for (size_t i = 0; i < sizeof(bits); ++i) out.push_back(static_cast<char>(bits >> (8 * i)));
}

void put_bytes(std::string& out, int field, const std::string& bytes) {
  out.push_back(key(field, kLengthDelimited));
  put_varint(out, bytes.size());
  out += bytes;
}

// Event{wall_time = 1, step = 2}: what every event starts with.
std::string event_at(int64_t step) {
  const double seconds = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  uint64_t bits;
  std::memcpy(&bits, &seconds, sizeof(bits));
  std::string event;
  event.push_back(key(1, kFixed64));
  put_fixed(event, bits);
  event.push_back(key(2, kVarint));
  put_varint(event, static_cast<uint64_t>(step));
  return event;
}

std::array<uint32_t, 256> crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t byte = 0; byte < 256; ++byte) {
    uint32_t crc = byte;
    for (int bit = 0; bit < 8; ++bit) crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    table[byte] = crc;
  }
  return table;
}

// TFRecord stores CRCs rotated and offset, so that a CRC of data that
// itself holds CRCs stays well distributed.
uint32_t masked_crc(const std::string& bytes) {
  const uint32_t crc = crc32c(bytes.data(), bytes.size());
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string host_name() {
  char name[256] = {};
  return gethostname(name, sizeof(name) - 1) == 0 ? name : "host";
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  static const auto table = crc32c_table();
  const auto* bytes = static_cast<const unsigned char*>(data);
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ bytes[i]) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

EventFile::EventFile(const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  path_ = dir + "/events.out.tfevents." + std::to_string(seconds.count()) + "." + host_name() + "." +
          std::to_string(getpid());
  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_)
    fail(path_ + ": cannot write the TensorBoard event file (log.tensorboard); check that run_dir is writable");
  std::string version = event_at(0);
  put_bytes(version, 3, "brain.Event:2");  // Event.file_version
  write_record(version);
}

void EventFile::scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values) {
  std::string summary;  // Summary{value = 1, repeated}
  for (const auto& [tag, value] : values) {
    std::string summary_value;  // Summary.Value{tag = 1, simple_value = 2}
    put_bytes(summary_value, 1, tag);
    summary_value.push_back(key(2, kFixed32));
    const float single = static_cast<float>(value);
    uint32_t bits;
    std::memcpy(&bits, &single, sizeof(bits));
    put_fixed(summary_value, bits);
    put_bytes(summary, 1, summary_value);
  }
  std::string event = event_at(step);
  put_bytes(event, 5, summary);  // Event.summary
  write_record(event);
}

void EventFile::write_record(const std::string& event) {
  std::string frame;
  put_fixed(frame, static_cast<uint64_t>(event.size()));
  const uint32_t length_crc = masked_crc(frame);
  put_fixed(frame, length_crc);
  frame += event;
  put_fixed(frame, masked_crc(event));
  out_.write(frame.data(), static_cast<std::streamsize>(frame.size()));
  out_.flush();
  if (!out_) fail(path_ + ": writing the TensorBoard event file failed (disk full?)");
}

}  // namespace lt
