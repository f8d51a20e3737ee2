// `longtrain check`: a recipe's parallel layout and memory settings against
// one rank. The job trains a few probe steps on its own ranks; every rank
// also trains the same batches from the same initial weights alone, in the
// plainest way (no split, no recomputation, tiling or offload, ZeRO 0), and
// each step's loss and every gradient, before clipping and the update, are
// compared. Gradients are compared element by element on the parts each
// rank owns, summed over the job per parameter: the worst parameter's
// cosine similarity and relative error.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "parallel/mesh/mesh.h"

namespace lt {

// How near the job must come to one rank computing in the same precision:
// fp32, the loss and every gradient within 1e-5 relative; bf16 (the order
// of sums differs, and bf16 rounds each), the loss within 5e-3 relative and
// every gradient at cosine similarity >= 0.999.
struct Tolerance {
  double loss = 0, gradient = 0, cosine = 0;  // 0: not checked
  static Tolerance for_precision(bool bf16);
};

struct CheckedStep {
  int64_t step = 0;
  double loss = 0, reference_loss = 0;
  double worst_cosine = 1, worst_error = 0;  // over parameters
  std::string worst_parameter;               // the one of the lowest cosine (fp32: of the largest error)
  bool passed = true;
};

struct CheckReport {
  std::vector<CheckedStep> steps;
  Tolerance tolerance;
  int64_t parameters = 0;  // compared, each summed over the job
  bool passed() const;
};

class Trainer;

// Fails for a recipe whose steps cannot be replayed on one rank.
void check_replayable(const Config& config);

// `config` on `mesh` (every rank of it calls) for `steps` probe steps.
// `built`, if given, sees the job's trainer before its first step (the
// tests' proof that a regime occurs).
CheckReport check_against_one_rank(const Config& config, Mesh& mesh, int64_t steps,
                                   const std::function<void(Trainer&)>& built = {});

// A line per step and the verdict.
std::string describe(const CheckReport& report);

// The recipe scaled down to tiny dimensions and lengths (CPU, fp32,
// synthetic passkey data, random weights) on `world` ranks: its layout
// kinds (tp with or without the sequence split, pipeline, Ulysses, ring,
// experts) each at degree 2 while the world allows, its ZeRO level and
// memory settings as they are. Returns the notes of what changed.
std::vector<std::string> scale_down(Config& config, int world);

// The memory.chunk_mb at which a chunk holds `layers` of the model's
// layers (a bound between two whole counts, e.g. 2.5 for two) in its
// compute dtype.
double chunk_mb_holding(const Config& config, double layers);

// The same model with fewer layers, when one rank cannot hold the whole:
// the fewest layers the layout can run. Returns the layers it kept.
int64_t fewest_layers(const Config& config);

}  // namespace lt
