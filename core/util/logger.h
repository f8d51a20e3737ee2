// Progress lines for people (stdout and <run_dir>/train.log) and one JSON
// object per logged step for programs (<run_dir>/metrics.jsonl).
#pragma once
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace lt {

class Logger {
 public:
  // append: continue the files of a resumed run instead of starting them anew.
  Logger(const std::string& run_dir, bool append);
  // Writes nothing: the logger of every rank but the first.
  Logger() = default;

  void line(const std::string& text);
  void metrics(const nlohmann::ordered_json& record);

 private:
  bool active_ = false;
  std::ofstream log_, metrics_;
};

// `value` printed by a printf pattern of one number ("%.4f").
std::string formatted(const char* pattern, double value);
std::string human_bytes(double bytes);
std::string human_duration(double seconds);
std::string human_count(double count);

}  // namespace lt
