// The `profile:` section: the steps a Chrome/Perfetto trace covers, taken
// on the ranks it names. The trace starts before its first step and is
// written after its last; a run resumed past its first step takes none.
#pragma once
#include <optional>
#include <string>

#include "core/config/config.h"

namespace lt {

class ProfileWindow {
 public:
  ProfileWindow(const ProfileConfig& profile, const std::string& run_dir, int rank, bool cuda);
  // Step `step` (1-based) is about to run.
  void before(int64_t step);
  // Step `step` ran: the line to log when it wrote the trace.
  std::optional<std::string> after(int64_t step);

 private:
  const ProfileConfig& profile_;
  std::string path_, dir_;
  bool takes_ = false, cuda_ = false, tracing_ = false;
};

}  // namespace lt
