// Native checkpoints: <dir>/step_00000042/ holding the weights (one
// model.safetensors, or with tensor or pipeline parallelism one file per
// (tp, pp) position), the optimizer state (one file, or one per writer with
// ZeRO-1 or model parallelism) and manifest.json (step, data position, RNG
// state, which slice of which tensor each file holds, size and checksum of
// every file). Every rank writes its files into a temporary directory that
// rank 0 renames when all are complete, so a crash never leaves a half
// checkpoint as the latest; the checksums catch later corruption. Tensors are
// read back by assembling the slices each rank needs, so a job may resume
// with other dp, tp, pp or ZeRO settings.
#pragma once
#include <optional>
#include <string>

#include "core/data/packer.h"
#include "core/model/llama.h"
#include "core/train/adamw.h"
#include "parallel/comm/communicator.h"

namespace lt {

struct TrainState {
  int64_t step = 0;          // optimizer steps completed
  DataPosition data;         // where the training stream continues
  at::Tensor rng;            // CPU generator state (uint8)
};

class CheckpointStore {
 public:
  CheckpointStore(std::string dir, int64_t keep);

  // What this rank writes into a checkpoint.
  struct Part {
    std::string model_file;      // its weights, if it is the one that writes them
    std::string optimizer_file;  // its optimizer state, if it holds any to write
  };

  // Collective over `world`: writes step_<step>, then drops all but the
  // newest `keep`. Returns its path.
  std::string save(LlamaForCausalLMImpl& model, const AdamW& optimizer, const TrainState& state, Communicator& world,
                   const Part& part);

  // Newest complete checkpoint in the directory, if any.
  std::optional<std::string> latest() const;

  // Removes temporaries left by an interrupted save (collective: rank 0 does it).
  void remove_partial(Communicator& world) const;

 private:
  void prune() const;

  std::string dir_;
  int64_t keep_;
};

// `path` is a step directory, or a directory of them (the newest is used).
std::string resolve_checkpoint(const std::string& path);

// Verifies checksums, then loads this rank's slices of the weights (and, when
// given, of the optimizer state, and the training state).
void load_checkpoint(const std::string& path, LlamaForCausalLMImpl& model, AdamW* optimizer, TrainState* state);

}  // namespace lt
