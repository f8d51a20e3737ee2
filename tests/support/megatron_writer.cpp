#include "tests/support/megatron_writer.h"

#include <fstream>
#include <stdexcept>

namespace lt::testing {

void write_megatron_dataset(const std::string& prefix, const std::vector<std::vector<std::vector<int64_t>>>& documents,
                            uint8_t dtype_code) {
  const size_t item = dtype_code == 1 || dtype_code == 2   ? 1
                      : dtype_code == 3 || dtype_code == 8 ? 2
                      : dtype_code == 4                    ? 4
                                                           : 8;
  std::ofstream bin(prefix + ".bin", std::ios::binary);
  std::vector<int32_t> sizes;
  std::vector<int64_t> pointers, doc_index{0};
  int64_t offset = 0;
  for (const auto& doc : documents) {
    for (const auto& sequence : doc) {
      for (int64_t token : sequence) bin.write(reinterpret_cast<const char*>(&token), item);  // little-endian
      sizes.push_back(static_cast<int32_t>(sequence.size()));
      pointers.push_back(offset);
      offset += static_cast<int64_t>(sequence.size() * item);
    }
    doc_index.push_back(static_cast<int64_t>(sizes.size()));
  }
  std::ofstream idx(prefix + ".idx", std::ios::binary);
  idx.write("MMIDIDX\x00\x00", 9);
  const uint64_t version = 1, count = sizes.size(), doc_count = doc_index.size();
  idx.write(reinterpret_cast<const char*>(&version), 8);
  idx.write(reinterpret_cast<const char*>(&dtype_code), 1);
  idx.write(reinterpret_cast<const char*>(&count), 8);
  idx.write(reinterpret_cast<const char*>(&doc_count), 8);
  idx.write(reinterpret_cast<const char*>(sizes.data()), sizes.size() * 4);
  idx.write(reinterpret_cast<const char*>(pointers.data()), pointers.size() * 8);
  idx.write(reinterpret_cast<const char*>(doc_index.data()), doc_index.size() * 8);
  if (!bin || !idx) throw std::runtime_error("cannot write test dataset " + prefix);
}

}  // namespace lt::testing
