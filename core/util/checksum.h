// 64-bit FNV-1a over 8-byte little-endian words (then the tail bytes): a fast
// checksum that catches truncation and bit rot in checkpoint files.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace lt {

uint64_t checksum64(const uint8_t* data, size_t size);
std::string checksum_hex(uint64_t value);
// Checksum of a whole file (memory-mapped).
std::string file_checksum(const std::string& path);

}  // namespace lt
