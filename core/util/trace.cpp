#include "core/util/trace.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <filesystem>

#include "core/util/error.h"

namespace lt {
namespace {

namespace profiler = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

std::set<ActivityType> activities(bool cuda) {
  std::set<ActivityType> out{ActivityType::CPU};
  if (cuda) out.insert(ActivityType::CUDA);
  return out;
}

}  // namespace

void start_trace(bool cuda) {
  const ProfilerConfig config(ProfilerState::KINETO, /*report_input_shapes=*/true, /*profile_memory=*/false);
  profiler::prepareProfiler(config, activities(cuda));
  profiler::enableProfiler(config, activities(cuda));
}

void stop_trace(const std::string& path) {
  auto result = profiler::disableProfiler();
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  LT_CHECK(result != nullptr, "profile: the profiler returned no trace for " + path);
  result->save(path);
}

void follow_trace(bool& following) {
  const bool enabled = profiler::isProfilerEnabledInMainThread();
  if (enabled == following) return;
  if (enabled) profiler::enableProfilerInChildThread();
  else profiler::disableProfilerInChildThread();
  following = enabled;
}

}  // namespace lt
