#include "core/config/yaml_section.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "core/util/error.h"
#include "core/util/files.h"

namespace lt {
namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// Integers accept K / M / G suffixes (powers of 1024): seq_len: 128K.
bool parse_int(const std::string& text, int64_t& out) {
  if (text.empty()) return false;
  int64_t scale = 1;
  std::string digits = text;
  char last = static_cast<char>(std::toupper(static_cast<unsigned char>(text.back())));
  if (last == 'K' || last == 'M' || last == 'G') {
    scale = last == 'K' ? 1024 : last == 'M' ? 1024 * 1024 : 1024LL * 1024 * 1024;
    digits.pop_back();
  }
  int64_t value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || end != digits.data() + digits.size()) return false;
  return !__builtin_mul_overflow(value, scale, &out);  // 9E18K does not fit 64 bits: not an integer we take
}

// Finite numbers only: no key takes inf or nan, and 1e400 is not a number
// a run could write back into its config.yaml.
bool parse_double(const std::string& text, double& out) {
  if (text.empty()) return false;
  char* end = nullptr;
  out = std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size() && std::isfinite(out);
}

bool parse_bool(const std::string& text, bool& out) {
  if (text == "true" || text == "yes" || text == "on") return out = true, true;
  if (text == "false" || text == "no" || text == "off") return out = false, true;
  return false;
}

bool parse_string(const std::string& text, std::string& out) {
  out = text;
  return true;
}

}  // namespace

std::string ConfigSources::locate(const std::string& path, const YAML::Mark& mark) const {
  // The file the key came from: a preset, the command line, or the recipe.
  std::string file = recipe_file;
  for (std::string key = path;;) {
    if (auto it = origin.find(key); it != origin.end()) {
      file = it->second;
      break;
    }
    // Up one level: "a.b[2]" -> "a.b" -> "a".
    auto cut = key.back() == ']' ? key.rfind('[') : key.rfind('.');
    if (cut == std::string::npos) break;
    key.resize(cut);
  }
  if (file.rfind("command line", 0) == 0 || mark.is_null()) return file + ": ";
  return file + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1) + ": ";
}

std::string ConfigSources::locate(const std::string& path) const {
  // Walk the tree to the deepest node of the path that exists.
  YAML::Node node = root;
  YAML::Mark mark = root.Mark();
  for (size_t start = 0; start <= path.size();) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    // "name[i]" is item i of the list under name.
    const auto bracket = part.find('[');
    const std::string name = part.substr(0, bracket);
    if (!node.IsMap() || !node[name]) break;
    node = node[name];
    if (bracket != std::string::npos) {
      const size_t item = std::strtoul(part.substr(bracket + 1).c_str(), nullptr, 10);
      if (!node.IsSequence() || item >= node.size()) break;
      node = node[item];
    }
    mark = node.Mark();
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return locate(path, mark);
}

Section::Section(YAML::Node node, std::string path, std::shared_ptr<const ConfigSources> sources)
    : node_(node.IsDefined() ? node : YAML::Node()), path_(std::move(path)), sources_(std::move(sources)) {
  // An absent section reads as empty: every key takes its default.
  if (node_ && !node_.IsNull() && !node_.IsMap())
    fail(sources_->locate(path_) + path_ + ": expected a mapping of keys (key: value), got a " +
         (node_.IsSequence() ? "list" : "single value"));
}

template <class T>
void Section::read(const char* key, T& value, const Check<T>& check, const char* type_name,
                   bool (*parse)(const std::string&, T&)) {
  seen_.insert(key);
  const std::string path = join(key);
  YAML::Node child = node_.IsMap() ? static_cast<const YAML::Node&>(node_)[key] : YAML::Node();
  const bool present = child && !child.IsNull();
  if (present) {
    if (!child.IsScalar() || !parse(child.Scalar(), value))
      fail(sources_->locate(path) + path + ": expected " + type_name + ", got " +
           (child.IsScalar() ? "'" + excerpt(child.Scalar()) + "'"
                             : std::string(child.IsMap() ? "a mapping" : "a list")));
  }
  if (!check) return;
  std::string problem = check(value);
  if (problem.empty()) return;
  // A missing key is reported after the unknown ones: a typo is the likelier cause.
  if (!present) {
    if (missing_.empty()) missing_ = sources_->locate(path) + path + " is required: " + problem;
    return;
  }
  fail(sources_->locate(path) + path + ": got " + excerpt(YAML::Dump(child)) + ", " + problem);
}

void Section::fail_at(const std::string& key, const std::string& message) const {
  fail(sources_->locate(join(key)) + join(key) + ": " + message);
}

void Section::field(const char* key, int64_t& value, const Check<int64_t>& check) {
  read(key, value, check, "an integer", parse_int);
}
void Section::field(const char* key, double& value, const Check<double>& check) {
  read(key, value, check, "a finite number", parse_double);
}
void Section::field(const char* key, bool& value, const Check<bool>& check) {
  read(key, value, check, "true or false", parse_bool);
}
void Section::field(const char* key, std::string& value, const Check<std::string>& check) {
  // Paths and names go into the run's config.yaml and JSON manifests.
  const Check<std::string> utf8_then_check = [&check](const std::string& v) {
    if (!is_utf8(v))
      return std::string(
          "is not valid UTF-8 (a run records its paths and names in YAML and JSON, "
          "which hold only UTF-8): rename it");
    return check ? check(v) : std::string();
  };
  read(key, value, utf8_then_check, "a string", parse_string);
}

void Section::field(const char* key, std::vector<int64_t>& values, const Check<int64_t>& check) {
  seen_.insert(key);
  const std::string path = join(key);
  const YAML::Node node = node_.IsMap() ? static_cast<const YAML::Node&>(node_)[key] : YAML::Node();
  if (!node || node.IsNull()) return;
  if (!node.IsSequence()) fail(sources_->locate(path) + path + ": expected a list of integers, e.g. [1K, 4K]");
  values.clear();
  for (size_t i = 0; i < node.size(); ++i) {
    int64_t value = 0;
    const std::string item = path + "[" + std::to_string(i) + "]";
    if (!node[i].IsScalar() || !parse_int(node[i].Scalar(), value))
      fail(sources_->locate(path) + item + ": expected an integer, got " + excerpt(YAML::Dump(node[i])));
    const std::string problem = check ? check(value) : "";
    if (!problem.empty()) fail(sources_->locate(path) + item + ": got " + excerpt(node[i].Scalar()) + ", " + problem);
    values.push_back(value);
  }
}

void Section::finish() const {
  for (const auto& item : node_.IsMap() ? node_ : YAML::Node(YAML::NodeType::Map)) {
    const std::string key = item.first.as<std::string>();
    if (seen_.count(key)) continue;
    std::string best;
    size_t best_distance = 4;  // suggest only plausible typos
    for (const auto& known : seen_) {
      size_t d = known.rfind(key, 0) == 0 ? 1 : edit_distance(key, known);  // a prefix is a near miss too
      if (d < best_distance) best_distance = d, best = known;
    }
    std::string valid;
    for (const auto& known : seen_) valid += (valid.empty() ? "" : ", ") + known;
    fail(sources_->locate(join(key), item.first.Mark()) + "unknown key '" + excerpt(join(key)) + "'" +
         (best.empty() ? "" : " (did you mean '" + join(best) + "'?)") + "; valid keys here: " + valid);
  }
  if (!missing_.empty()) fail(missing_);
}

}  // namespace lt
