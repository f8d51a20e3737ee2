// Progress lines for people (stdout and <run_dir>/train.log) and one JSON
// object per logged step for programs (<run_dir>/metrics.jsonl), its
// figures also as TensorBoard scalars (<run_dir>/tb/) when asked.
#pragma once
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace lt {

class EventFile;

class Logger {
 public:
  // append: continue the files of a resumed run instead of starting them
  // anew; tensorboard: also write the records' figures as scalars.
  Logger(const std::string& run_dir, bool append, bool tensorboard);
  // Writes nothing: the logger of every rank but the first.
  Logger();
  ~Logger();

  void line(const std::string& text);
  // A record with its "step"; each other number in it (not a flag) is
  // also the TensorBoard scalar of that name at that step.
  void metrics(const nlohmann::ordered_json& record);

 private:
  void write(std::ofstream& out, const std::string& file, const std::string& text);

  bool active_ = false;
  std::string run_dir_;
  std::ofstream log_, metrics_;
  std::unique_ptr<EventFile> events_;
};

// `value` printed by a printf pattern of one number ("%.4f").
std::string formatted(const char* pattern, double value);
std::string human_bytes(double bytes);
std::string human_duration(double seconds);
std::string human_count(double count);

}  // namespace lt
