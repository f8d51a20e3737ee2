// Chrome/Perfetto traces through LibTorch's Kineto profiler (the recipe's
// profile: section), and the spans longtrain marks in them: attention,
// MLP, loss, all-to-all, ring step, pipeline send/recv, bucket reduction,
// chunk fetch, optimizer. A span costs a flag test when no trace is taken.
#pragma once
#include <ATen/record_function.h>

#include <string>

#define LT_TRACE_SCOPE(name) RECORD_USER_SCOPE("lt::" name)

namespace lt {

// Starts recording this thread's operators and spans (and every thread's
// that follows, below); with `cuda` also the device's kernels.
void start_trace(bool cuda);
// Stops recording and writes the Chrome trace JSON to `path`.
void stop_trace(const std::string& path);
// Called by a worker thread before each task: joins a trace the main
// thread takes (and leaves it when it ends). `following` is its state.
void follow_trace(bool& following);

}  // namespace lt
