#include "offload/profiler/planner.h"

#include <algorithm>
#include <cstdio>

#include "core/util/error.h"
#include "core/util/logger.h"
#include "offload/chunks/chunk_manager.h"

namespace lt {
namespace {

// The plan leaves this share of the budget free: the cost model's error
// (a few percent on the tiny model, measured by the tests) and allocator
// fragmentation.
constexpr double kHeadroom = 0.05;

// Device bytes a layer adds to forward's running total under `mode`. A
// swapped layer's input leaves the device (where the host is separate).
int64_t kept(const Profile& p, const BlockProfile& b, BlockMode mode) {
  const int64_t added = mode == BlockMode::keep ? b.kept : b.output;
  return added - (mode == BlockMode::swap && p.swap_frees_device ? b.input : 0);
}

// The activation peak of one micro-batch: at the head (forward's total plus
// the loss's working set) or in some layer's backward (what the layers
// before it keep plus its own working set). The profile measured both with
// every layer checkpointed; other modes shift them by the difference in
// what the layers before keep. 1F1B holds in_flight micro-batches' forward
// totals at once.
int64_t activation_peak(const Profile& p, const LayerModes& modes) {
  int64_t below = p.base, profiled_below = p.base, peak = 0;
  for (const auto& b : p.blocks) {
    const BlockMode mode = modes.at(b.layer);
    peak = std::max(peak, b.start + b.transient + (below - profiled_below));
    below += kept(p, b, mode), profiled_below += b.output;
  }
  peak = std::max({peak, p.head_peak + (below - profiled_below), below});
  return peak + (p.in_flight - 1) * (below - p.base);
}

// Seconds a copy of `bytes` costs the step beside `compute` seconds of work.
double exposed(const Profile& p, double bytes, double compute, bool overlapped) {
  const double copy = bytes / p.link_bytes_per_s;
  return overlapped ? std::max(0.0, copy - compute) : copy;
}

double step_seconds(const Profile& p, const LayerModes& modes, int64_t n_persist, int64_t n_buffer) {
  double micro = p.other_s, backward = 0;
  std::vector<double> chunk_compute(p.chunks.size(), 0.0);
  for (size_t i = 0; i < p.blocks.size(); ++i) {
    const auto& b = p.blocks[i];
    const BlockMode mode = modes.at(b.layer);
    const double compute = b.recompute_s + b.backward_s + (mode == BlockMode::keep ? 0 : b.forward_s);
    micro += compute;
    backward += b.backward_s + (mode == BlockMode::keep ? 0 : b.recompute_s);
    if (mode == BlockMode::swap) micro += exposed(p, 2.0 * b.input, b.forward_s + b.recompute_s, p.overlap_swaps);
    if (!p.chunks.empty()) chunk_compute[p.chunk_of_block[i]] += compute;
  }
  // A chunk off the device comes over for forward and for the
  // recomputation, and its gradients go back; with a second buffer the
  // next chunk's copy runs while this one computes.
  for (size_t c = static_cast<size_t>(n_persist); c < p.chunks.size(); ++c)
    micro += exposed(p, 3.0 * p.chunks[c], chunk_compute[c], p.overlap_chunk_copies && n_buffer >= 2);
  // The chunks' host update hides behind the last micro-batch's backward.
  const double host = p.overlap_host_optimizer ? std::max(0.0, p.host_optimizer_s - backward) : p.host_optimizer_s;
  return p.micro_batches * micro + p.optimizer_s + host;
}

BlockMode leanest(const Profile& p) { return p.swap_frees_device ? BlockMode::swap : BlockMode::checkpoint; }

// From the leanest modes, each layer (the last first: its activations are
// the first backward frees) takes the fastest mode that still fits.
LayerModes fit_modes(const Profile& p, int64_t n_persist, int64_t n_buffer, int64_t budget) {
  LayerModes modes;
  for (const auto& b : p.blocks) modes[b.layer] = leanest(p);
  // A chunked layer's weights leave the device between forward and
  // backward: it cannot keep its activations.
  std::vector<BlockMode> better = {BlockMode::checkpoint};
  if (p.chunks.empty()) better.insert(better.begin(), BlockMode::keep);
  MemoryPlan best = predict(p, modes, n_persist, n_buffer);
  for (auto b = p.blocks.rbegin(); b != p.blocks.rend(); ++b)
    for (BlockMode mode : better) {
      if (mode == modes[b->layer]) break;
      auto trial = modes;
      trial[b->layer] = mode;
      const MemoryPlan plan = predict(p, trial, n_persist, n_buffer);
      if (plan.peak() <= budget && plan.step_s < best.step_s) {
        modes = std::move(trial), best = plan;
        break;
      }
    }
  return modes;
}

std::string layer_ranges(const MemoryPlan& plan) {
  std::string out;
  auto it = plan.modes.begin();
  while (it != plan.modes.end()) {
    auto end = it;
    int64_t last = it->first;
    while (std::next(end) != plan.modes.end() && std::next(end)->second == it->second &&
           std::next(end)->first == last + 1)
      last = (++end)->first;
    if (!out.empty()) out += ", ";
    out += std::to_string(it->first);
    if (last > it->first) {
      out += '-';
      out += std::to_string(last);
    }
    out += ' ';
    out += mode_name(it->second);
    it = std::next(end);
  }
  return out;
}

}  // namespace

MemoryPlan predict(const Profile& profile, LayerModes modes, int64_t n_persist, int64_t n_buffer) {
  MemoryPlan plan;
  const int64_t chunks = static_cast<int64_t>(profile.chunks.size());
  plan.n_persist = std::min(n_persist, chunks);
  plan.n_buffer = chunks > plan.n_persist ? std::max<int64_t>(1, n_buffer) : 0;
  plan.state = profile.state;
  plan.chunks = ChunkManager::required_bytes(profile.chunks, plan.n_persist, plan.n_buffer);
  plan.activations = activation_peak(profile, modes);
  plan.step_s = step_seconds(profile, modes, plan.n_persist, plan.n_buffer);
  plan.modes = std::move(modes);
  return plan;
}

MemoryPlan choose_plan(const Profile& profile, int64_t device_budget) {
  const auto budget = static_cast<int64_t>(static_cast<double>(device_budget) * (1 - kHeadroom));
  LayerModes lean;
  for (const auto& b : profile.blocks) lean[b.layer] = leanest(profile);
  const MemoryPlan minimum = predict(profile, lean, 0, 1);
  if (minimum.peak() > budget)
    fail("memory.device_budget_gb: no plan fits " + human_bytes(static_cast<double>(device_budget)) +
         " per rank; the leanest (every layer " + mode_name(leanest(profile)) +
         (profile.chunks.empty() ? "" : ", no persistent chunk, one buffer") + ") needs " +
         human_bytes(static_cast<double>(minimum.peak())) + " (state " +
         human_bytes(static_cast<double>(minimum.state)) + ", chunks " +
         human_bytes(static_cast<double>(minimum.chunks)) + ", activations " +
         human_bytes(static_cast<double>(minimum.activations)) + ") and 5% headroom: raise the budget to at least " +
         human_bytes(static_cast<double>(minimum.peak()) / (1 - kHeadroom)) +
         ", or split "
         "the model further (pp, tp, sp) or offload it (memory.offload_model)");
  MemoryPlan best = minimum;
  const int64_t chunks = static_cast<int64_t>(profile.chunks.size());
  for (int64_t buffers = 1; buffers <= (chunks > 0 ? 2 : 1); ++buffers)
    for (int64_t persist = 0; persist <= chunks; ++persist) {
      if (predict(profile, lean, persist, buffers).peak() > budget) break;  // more persistent chunks need more
      const MemoryPlan plan = predict(profile, fit_modes(profile, persist, buffers, budget), persist, buffers);
      if (plan.step_s < best.step_s) best = plan;
    }
  return best;
}

std::string describe(const MemoryPlan& plan, int64_t chunk_count) {
  char seconds[32];
  std::snprintf(seconds, sizeof(seconds), "%.3g s", plan.step_s);
  std::string out = "layers " + layer_ranges(plan);
  if (chunk_count > 0)
    out += "; " + std::to_string(plan.n_persist) + " of " + std::to_string(chunk_count) + " chunks persistent, " +
           std::to_string(plan.n_buffer) + " buffer" + (plan.n_buffer == 1 ? "" : "s");
  return out + "; predicted step " + seconds + ", peak " + human_bytes(static_cast<double>(plan.peak())) + " (state " +
         human_bytes(static_cast<double>(plan.state)) + ", chunks " + human_bytes(static_cast<double>(plan.chunks)) +
         ", activations " + human_bytes(static_cast<double>(plan.activations)) + ")";
}

}  // namespace lt
