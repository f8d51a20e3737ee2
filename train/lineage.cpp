#include "train/lineage.h"

#include <cstdio>
#include <limits>
#include <random>

namespace lt {

Lineage Lineage::of_manifest(const nlohmann::json& manifest) {
  if (!manifest.contains("lineage")) return fresh("unrecorded");
  std::vector<Run> runs;
  for (const auto& r : manifest.at("lineage"))
    runs.push_back({r.at("run").get<std::string>(), r.at("from_step").get<int64_t>()});
  return Lineage(std::move(runs));
}

Lineage Lineage::resumed(const std::string& id, int64_t step) const {
  auto runs = runs_;
  runs.push_back({id, step});
  return Lineage(std::move(runs));
}

bool Lineage::holds(const Lineage& checkpoint, int64_t step) const {
  for (size_t i = 0; i < runs_.size(); ++i) {
    if (runs_[i].id != checkpoint.writer()) continue;
    const int64_t until = i + 1 < runs_.size() ? runs_[i + 1].from_step : std::numeric_limits<int64_t>::max();
    return step <= until;
  }
  return false;
}

nlohmann::json Lineage::to_json() const {
  auto out = nlohmann::json::array();
  for (const auto& r : runs_) out.push_back({{"run", r.id}, {"from_step", r.from_step}});
  return out;
}

std::string new_run_id() {
  std::random_device device;
  std::mt19937_64 random((static_cast<uint64_t>(device()) << 32) ^ device());
  char buffer[17];
  std::snprintf(buffer, sizeof(buffer), "%016llx", static_cast<unsigned long long>(random()));
  return buffer;
}

}  // namespace lt
