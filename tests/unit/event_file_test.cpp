// The TensorBoard event writer's framing (what TensorBoard reads back is
// tested against the tensorboard package in tests/cli/train_eval_resume.sh).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "core/util/error.h"
#include "core/util/event_file.h"
#include "core/util/logger.h"

namespace lt {
namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

uint64_t little_endian(const std::string& bytes, size_t at, size_t width) {
  uint64_t value = 0;
  for (size_t i = 0; i < width; ++i) value |= uint64_t{static_cast<unsigned char>(bytes[at + i])} << (8 * i);
  return value;
}

uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

TEST(EventFile, Crc32cIsCastagnolis) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);  // the standard check value
  EXPECT_EQ(crc32c("", 0), 0u);
}

// A file's records, each checked to be framed by its length and two masked
// CRCs, in order.
std::vector<std::string> records(const std::string& path) {
  const std::string bytes = read_all(path);
  std::vector<std::string> events;
  for (size_t at = 0; at < bytes.size();) {
    EXPECT_LE(at + 12, bytes.size());
    const uint64_t length = little_endian(bytes, at, 8);
    EXPECT_EQ(little_endian(bytes, at + 8, 4), masked(crc32c(bytes.data() + at, 8)));
    EXPECT_LE(at + 16 + length, bytes.size());
    if (at + 16 + length > bytes.size()) break;
    EXPECT_EQ(little_endian(bytes, at + 12 + length, 4), masked(crc32c(bytes.data() + at + 12, length)));
    events.push_back(bytes.substr(at + 12, length));
    at += 16 + length;
  }
  return events;
}

// An event starts with its wall time (key 0x09, 8 bytes) and its step (key 0x10, a varint).
int64_t step_of(const std::string& event) { return event.size() > 10 && event[9] == 0x10 ? event[10] : -1; }

// The version event first, then one per step, each scalar's tag and float value inside.
TEST(EventFile, RecordsAreFramedAndChecksummed) {
  const std::string dir = ::testing::TempDir() + "/event_file_test";
  std::filesystem::remove_all(dir);
  std::string path;
  {
    EventFile events(dir);
    events.scalars(3, {{"loss", 2.5}, {"lr", 1e-4}});
    events.scalars(4, {{"loss", 2.0}});
    path = events.path();
  }
  const auto events = records(path);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_NE(events[0].find("brain.Event:2"), std::string::npos);
  EXPECT_NE(events[1].find("loss"), std::string::npos);
  const float value = 2.5f;
  EXPECT_NE(events[1].find(std::string("\x15", 1) + std::string(reinterpret_cast<const char*>(&value), 4)),
            std::string::npos);
  EXPECT_NE(events[1].find("lr"), std::string::npos);
  EXPECT_EQ(step_of(events[1]), 3);
  EXPECT_EQ(step_of(events[2]), 4);
}

// The logger writes a record's numbers (not "step", not flags) as scalars at its step.
TEST(EventFile, LoggerWritesEveryNumberOfARecord) {
  const std::string run = ::testing::TempDir() + "/event_logger_test";
  std::filesystem::remove_all(run);
  {
    Logger logger(run, false, true);
    logger.metrics({{"step", 7}, {"loss", 1.25}, {"skipped", true}, {"tokens_per_s", 100}});
  }
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(run + "/tb")) files.push_back(entry.path());
  ASSERT_EQ(files.size(), 1u);
  const auto events = records(files[0]);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_NE(events[1].find("loss"), std::string::npos);
  EXPECT_NE(events[1].find("tokens_per_s"), std::string::npos);
  EXPECT_EQ(events[1].find("skipped"), std::string::npos);
  EXPECT_EQ(step_of(events[1]), 7);
}

TEST(EventFile, UnwritableDirectoryIsOneLineNamingIt) {
  const std::string blocker = ::testing::TempDir() + "/event_blocker";
  std::filesystem::remove_all(blocker);
  std::ofstream(blocker) << "a file, not a folder";
  try {
    EventFile events(blocker + "/tb");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(blocker + "/tb/events.out.tfevents."), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("log.tensorboard"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lt
