#include "train/parameter_owners.h"

#include "core/model/compute_weights.h"
#include "core/util/scope_exit.h"
#include "parallel/data_parallel/replica_sets.h"

namespace lt {
namespace {

StateOptions state_options(const Config& config) {
  const auto& p = config.parallel;
  StateOptions options;
  options.bucket_bytes = static_cast<int64_t>(p.bucket_mb * (1 << 20));
  options.overlap = p.overlap;
  options.zero = static_cast<ZeroLevel>(p.zero);
  options.reduce_dtype = p.reduce_dtype == WireDtype::bf16 ? at::kBFloat16 : at::kFloat;
  options.compute_dtype = compute_dtype(config.train);
  options.read_in_fp32 = read_in_fp32;
  return options;
}

}  // namespace

LayerFetch ParameterOwners::layer_gather(const Config& config) {
  if (config.parallel.zero != 3) return {};
  return [this](int64_t layer) {
    for (auto& s : states) s->use(layer);
  };
}

void ParameterOwners::own(const Config& config, Mesh& mesh, RankModel& rank) {
  // Ranks that run their backwards at different times (a set over pipeline
  // stages) or different numbers of them (adaptive packing) reduce once, at
  // the step's end; those running different numbers of forwards gather the
  // weights once, for the step.
  const bool adaptive = config.data.packing == Packing::adaptive;
  StateOptions options = state_options(config);
  options.gather_each_layer = !adaptive;
  const auto chunked = rank.chunks ? rank.chunks->host_parameters() : std::vector<NamedParameter>{};
  for (auto& set : replica_sets(mesh, *rank.model, chunked)) {
    options.reduce_each_backward = !set.spans_stages && !adaptive;
    Communicator* gathers = options.zero == ZeroLevel::weights ? &mesh.twin(*set.group) : nullptr;
    states.push_back(std::make_unique<ParameterState>(set.params, *set.group, options, gathers));
    copies.push_back(set.copies);
    parts.push_back(set.parts);
  }
}

void ParameterOwners::on_masters(ChunkManager* chunks, const std::function<void()>& fn) {
  std::function<void()> run = fn;
  for (auto& s : states) run = [&s, run] { s->with_masters(run); };
  if (chunks) chunks->with_masters(run);
  else run();
}

void ParameterOwners::with_step_weights(const std::function<void()>& fn) {
  for (auto& s : states) s->gather_for_step();
  ScopeExit release([this] {
    for (auto& s : states) s->release();
  });
  fn();
}

}  // namespace lt
