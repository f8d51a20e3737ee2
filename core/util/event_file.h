// TensorBoard's event files, written without TensorFlow: a file of TFRecords
// (the data's length, a masked CRC-32C of the length, the data, a masked
// CRC-32C of the data), each record one Event protocol buffer. Only what
// scalars need is encoded: the file-version event, then one event per step
// whose Summary holds a value (tag, simple_value) per scalar, the form
// TensorBoard and `wandb sync` read.
#pragma once
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace lt {

// CRC-32C (Castagnoli) of `size` bytes, the checksum of TFRecord frames.
uint32_t crc32c(const void* data, size_t size);

class EventFile {
 public:
  // Starts <dir>/events.out.tfevents.<seconds>.<host>.<pid> with its
  // version event; a run that resumes starts a file of its own beside the
  // earlier ones, and TensorBoard reads them all.
  explicit EventFile(const std::string& dir);

  // The scalars of `step` (tag, value) as one event, written and flushed
  // at once, so that a TensorBoard watching the directory sees them.
  void scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values);

  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& event);

  std::string path_;
  std::ofstream out_;
};

}  // namespace lt
