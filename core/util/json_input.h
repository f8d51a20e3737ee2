// Reading JSON that longtrain did not write (HF configs, safetensors
// headers, shard indexes) or that a person may have edited (manifests):
// nesting is bounded while parsing, before any value is built, and values
// are quoted into messages only in part.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace lt {

// Deeper than any file longtrain reads (a manifest nests 4 levels): enough
// for any honest file, and far from what exhausts a thread's stack.
inline constexpr int kMaxJsonDepth = 64;

// `text` parsed; malformed or too deeply nested JSON is an error naming `where`.
nlohmann::json parse_json(std::string_view text, const std::string& where);

// The whole of a file, parsed as above (ordered: its keys in file order); a
// file that cannot be read is an error naming it.
nlohmann::json read_json_file(const std::string& path);
nlohmann::ordered_json read_ordered_json_file(const std::string& path);

// A value for a message: its first `limit` characters, one line.
std::string shown(const nlohmann::json& value, size_t limit = 200);
std::string shown(const nlohmann::ordered_json& value, size_t limit = 200);

}  // namespace lt
