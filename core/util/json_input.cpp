#include "core/util/json_input.h"

#include <fstream>
#include <sstream>

#include "core/util/error.h"

namespace lt {
namespace {

template <class Json>
Json parse_bounded(std::string_view text, const std::string& where) {
  // The callback sees each value's depth as the parser opens it: deeper
  // input is refused before it is built (and before a recursive dump or
  // destructor could exhaust the stack).
  typename Json::parser_callback_t bound = [&where](int depth, nlohmann::json::parse_event_t event, Json&) {
    if (depth > kMaxJsonDepth &&
        (event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start))
      fail(where + ": JSON nested more than " + std::to_string(kMaxJsonDepth) +
           " levels deep: not a file of this kind");
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), bound);
  } catch (const nlohmann::json::exception& e) {
    fail(where + ": malformed JSON: " + excerpt(e.what()));
  }
}

std::string file_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path + ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail(path + ": cannot read");
  return text.str();
}

template <class Json>
std::string shown_text(const Json& value, size_t limit) {
  // Replacement of invalid UTF-8, so that dumping a user's bytes cannot throw.
  return excerpt(value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), limit);
}

}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& where) {
  return parse_bounded<nlohmann::json>(text, where);
}

nlohmann::json read_json_file(const std::string& path) { return parse_json(file_text(path), path); }

nlohmann::ordered_json read_ordered_json_file(const std::string& path) {
  return parse_bounded<nlohmann::ordered_json>(file_text(path), path);
}

std::string shown(const nlohmann::json& value, size_t limit) { return shown_text(value, limit); }
std::string shown(const nlohmann::ordered_json& value, size_t limit) { return shown_text(value, limit); }

}  // namespace lt
