// Typed, located reading of one YAML mapping. Every error names the file,
// line, column and full key path, and says what would be valid.
#pragma once
#include <yaml-cpp/yaml.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "core/config/config.h"

namespace lt {

// Where each key came from: the recipe, a model preset or the command line.
struct ConfigSources {
  std::string recipe_file;
  YAML::Node root;
  std::map<std::string, std::string> origin;  // key path -> file or "command line"

  // "file:line:col: " for a key path (or its nearest located parent).
  std::string locate(const std::string& path) const;
  // The same at a known position (e.g. of a key rather than its value).
  std::string locate(const std::string& path, const YAML::Mark& mark) const;
};

// A check returns "" when the value is valid, else what would be valid.
template <class T>
using Check = std::function<std::string(const T&)>;

class Section {
 public:
  Section(YAML::Node node, std::string path, std::shared_ptr<const ConfigSources> sources);

  void field(const char* key, int64_t& value, const Check<int64_t>& check = {});
  void field(const char* key, double& value, const Check<double>& check = {});
  void field(const char* key, bool& value, const Check<bool>& check = {});
  void field(const char* key, std::string& value, const Check<std::string>& check = {});
  // A list of integers ([256, 1K, 4K]); `check` applies to each.
  void field(const char* key, std::vector<int64_t>& values, const Check<int64_t>& check = {});
  // A choice (an enum of config.h): one of its spellings. `check`, if given,
  // sees the text first (to explain a value people try that is not one).
  template <class E, std::enable_if_t<std::is_enum_v<E>, int> = 0>
  void field(const char* key, E& value, const Check<std::string>& check = {}) {
    std::string text = name(value);
    field(key, text, [&check](const std::string& t) {
      if (check)
        if (auto why = check(t); !why.empty()) return why;
      std::string valid;
      for (const auto& [v, spelling] : Spellings<E>::all) {
        if (t == spelling) return std::string();
        if (*spelling) valid += (valid.empty() ? "" : ", ") + std::string(spelling);
      }
      return "must be one of: " + valid;
    });
    for (const auto& [v, spelling] : Spellings<E>::all)
      if (text == spelling) value = v;
  }

  template <class T>
  void section(const char* key, T& value) {
    Section child(static_cast<const YAML::Node&>(node_)[key], join(key), sources_);
    seen_.insert(key);
    visit(child, value);
    child.finish();
  }

  // A list of mappings, each read like a section ("key[i].field").
  template <class T>
  void list(const char* key, std::vector<T>& values) {
    seen_.insert(key);
    const YAML::Node node = static_cast<const YAML::Node&>(node_)[key];
    if (!node.IsDefined() || node.IsNull()) return;
    if (!node.IsSequence()) fail_at(key, "expected a list of mappings (- key: value)");
    values.clear();
    for (size_t i = 0; i < node.size(); ++i) {
      Section child(node[i], join(key) + "[" + std::to_string(i) + "]", sources_);
      values.emplace_back();
      visit(child, values.back());
      child.finish();
    }
  }

  // Rejects keys no field asked for, suggesting the nearest valid one.
  void finish() const;

 private:
  [[noreturn]] void fail_at(const std::string& key, const std::string& message) const;
  template <class T>
  void read(const char* key, T& value, const Check<T>& check, const char* type_name,
            bool (*parse)(const std::string&, T&));
  std::string join(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  YAML::Node node_;
  std::string path_;
  std::shared_ptr<const ConfigSources> sources_;
  std::set<std::string> seen_;
  std::string missing_;  // the first required key that is absent
};

}  // namespace lt
