#include "core/util/logger.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "core/util/error.h"
#include "core/util/event_file.h"

namespace lt {

Logger::Logger(const std::string& run_dir, bool append, bool tensorboard) : active_(true), run_dir_(run_dir) {
  std::filesystem::create_directories(run_dir);
  const auto mode = append ? std::ios::app : std::ios::trunc;
  log_.open(run_dir + "/train.log", std::ios::out | mode);
  metrics_.open(run_dir + "/metrics.jsonl", std::ios::out | mode);
  if (!log_ || !metrics_) fail(run_dir + ": cannot write train.log / metrics.jsonl; check run_dir");
  if (tensorboard) events_ = std::make_unique<EventFile>(run_dir + "/tb");
}

// Here, where EventFile is complete.
Logger::Logger() = default;
Logger::~Logger() = default;

// A full disk or a vanished folder ends the run, naming the file: a run
// whose records stop silently cannot be trusted or compared.
void Logger::write(std::ofstream& out, const std::string& file, const std::string& text) {
  out << text << std::endl;
  if (!out) {
    active_ = false;  // the error's own way out must not write here again
    fail(run_dir_ + "/" + file + ": write failed (" + std::strerror(errno) + "): check free space and the folder");
  }
}

void Logger::line(const std::string& text) {
  if (!active_) return;
  std::cout << text << std::endl;
  write(log_, "train.log", text);
}

void Logger::metrics(const nlohmann::ordered_json& record) {
  if (!active_) return;
  write(metrics_, "metrics.jsonl", record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  if (!events_) return;
  std::vector<std::pair<std::string, double>> scalars;
  for (const auto& item : record.items())
    if (item.key() != "step" && item.value().is_number()) scalars.emplace_back(item.key(), item.value().get<double>());
  if (!scalars.empty()) events_->scalars(record.value("step", int64_t{0}), scalars);
}

std::string formatted(const char* pattern, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), pattern, value);
  return buffer;
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024 && unit < 4) bytes /= 1024, ++unit;
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.1f %s", bytes, units[unit]);
  return buffer;
}

std::string human_duration(double seconds) {
  const long s = static_cast<long>(seconds + 0.5);
  char buffer[32];
  if (s >= 3600) std::snprintf(buffer, sizeof(buffer), "%ldh%02ldm", s / 3600, s % 3600 / 60);
  else std::snprintf(buffer, sizeof(buffer), "%ldm%02lds", s / 60, s % 60);
  return buffer;
}

std::string human_count(double count) {
  char buffer[32];
  if (count >= 1e9) std::snprintf(buffer, sizeof(buffer), "%.2fB", count / 1e9);
  else if (count >= 1e6) std::snprintf(buffer, sizeof(buffer), "%.2fM", count / 1e6);
  else if (count >= 1e3) std::snprintf(buffer, sizeof(buffer), "%.1fK", count / 1e3);
  else std::snprintf(buffer, sizeof(buffer), "%.0f", count);
  return buffer;
}

}  // namespace lt
