#include "train/profile_window.h"

#include <algorithm>

#include "core/util/trace.h"

namespace lt {

ProfileWindow::ProfileWindow(const ProfileConfig& p, const std::string& run_dir, int rank, bool cuda)
    : profile_(p), dir_(run_dir + "/trace/"), cuda_(cuda) {
  takes_ = p.enabled() && (p.ranks.empty() || std::find(p.ranks.begin(), p.ranks.end(), rank) != p.ranks.end());
  path_ = dir_ + "rank" + std::to_string(rank) + "_steps" + std::to_string(p.start_step) + "-" +
          std::to_string(p.last_step()) + ".json";
}

void ProfileWindow::before(int64_t step) {
  if (takes_ && step == profile_.start_step) start_trace(cuda_), tracing_ = true;
}

std::optional<std::string> ProfileWindow::after(int64_t step) {
  if (!tracing_ || step != profile_.last_step()) return std::nullopt;
  stop_trace(path_);
  tracing_ = false;
  return "profile: steps " + std::to_string(profile_.start_step) + "-" + std::to_string(profile_.last_step()) +
         " traced to " + dir_ + " (a file per traced rank; open one in ui.perfetto.dev)";
}

}  // namespace lt
