// Native checkpoints: <dir>/step_00000042/ holding model.safetensors,
// optimizer.safetensors and manifest.json (step, data position, RNG state,
// size and checksum of every file). A checkpoint is written under a temporary
// name and renamed when complete, so a crash never leaves a half checkpoint
// as the latest; the checksums catch later corruption.
#pragma once
#include <optional>
#include <string>

#include "core/data/packer.h"
#include "core/model/llama.h"
#include "core/train/adamw.h"

namespace lt {

struct TrainState {
  int64_t step = 0;          // optimizer steps completed
  DataPosition data;         // where the training stream continues
  at::Tensor rng;            // CPU generator state (uint8)
};

class CheckpointStore {
 public:
  CheckpointStore(std::string dir, int64_t keep);

  // Writes step_<step>, then drops all but the newest `keep`. Returns its path.
  std::string save(LlamaForCausalLMImpl& model, const AdamW& optimizer, const TrainState& state);

  // Newest complete checkpoint in the directory, if any.
  std::optional<std::string> latest() const;

  // Removes temporaries left by an interrupted save.
  void remove_partial() const;

 private:
  std::string dir_;
  int64_t keep_;
};

// `path` is a step directory, or a directory of them (the newest is used).
std::string resolve_checkpoint(const std::string& path);

// Verifies checksums, then loads weights (and, when given, optimizer and state).
void load_checkpoint(const std::string& path, LlamaForCausalLMImpl& model, AdamW* optimizer, TrainState* state);

}  // namespace lt
