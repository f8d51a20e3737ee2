// Native checkpoints: <dir>/step_00000042/ holding the weights (one
// model.safetensors, or with tensor or pipeline parallelism one file per
// (tp, pp) position), the optimizer state (one file, or one per writer with
// ZeRO-1 or model parallelism) and manifest.json (step, data position, RNG
// state, which slice of which tensor each file holds, size and checksum of
// every file, the lineage of the run that wrote it, the data stream's
// fingerprint, and a checksum of the manifest itself). Every rank writes its
// files into a temporary directory that rank 0 renames when all are
// complete, so a crash never leaves a half checkpoint as the latest; the
// XXH3 checksums catch later corruption. A run owns the checkpoints of its
// lineage (lineage.h) and never prunes, replaces or resumes another's. Tensors are
// read back by assembling the slices each rank needs, so a job may resume
// with other dp, tp, pp or ZeRO settings.
#pragma once
#include <optional>
#include <string>

#include "train/lineage.h"
#include "core/data/packer.h"
#include "core/model/llama.h"
#include "core/optim/adamw.h"
#include "parallel/comm/communicator.h"

namespace lt {

struct TrainState {
  int64_t step = 0;                                            // optimizer steps completed
  DataPosition data;                                           // where the training stream continues
  at::Tensor rng;                                              // CPU generator state (uint8)
  nlohmann::json data_fingerprint = nlohmann::json::object();  // what the data stream is (data_fingerprint())
};

class CheckpointStore {
 public:
  // Keeps the newest `keep` checkpoints of its lineage in `dir`; saves every
  // `interval` steps (0: only at the end).
  CheckpointStore(std::string dir, int64_t keep, int64_t interval = 0);

  // Whether step `step` (1-based) of a run of `steps` saves one: at the
  // interval, and at the end.
  bool due(int64_t step, int64_t steps) const { return (interval_ > 0 && step % interval_ == 0) || step == steps; }

  // Collective over `world`, before anything else: rank 0 removes
  // temporaries of an interrupted save, chooses the checkpoint to resume
  // (`resume`: none | auto | a path) and checks that the directory holds no
  // checkpoint off this run's lineage (moving such into aside_<run>/ when
  // `move_aside`; never deleting). Every rank gets rank 0's answer, or its
  // error as an AgreedError. Returns the checkpoint to resume, if any.
  std::optional<std::string> open(const std::string& resume, bool move_aside, Communicator& world);

  // What this rank writes into a checkpoint.
  struct Part {
    std::string model_file;      // its weights, if it is the one that writes them
    std::string optimizer_file;  // its optimizer state, if it holds any to write
    // ZeRO-3: the weights are its shard of the fp32 masters, as the
    // optimizer's segments cut them (the parameters hold none).
    bool weights_in_segments = false;
  };
  // The files of rank `rank`: one process holding the whole model writes
  // plain model.safetensors and optimizer.safetensors; otherwise each writer
  // numbers its files by rank. `writes_weights`: the first replica of its
  // weights (of every (tp, pp) position, and of each set of experts);
  // `sharded_optimizer`: every rank holds a shard of the optimizer state
  // (ZeRO >= 1) and writes it; `sharded_weights`: also of the weights
  // (ZeRO-3), written as every rank holds them, never gathered.
  static Part part(int rank, bool whole_model, bool writes_weights, bool sharded_optimizer, bool sharded_weights);

  // Collective over `world`: writes step_<step> (replacing one of this
  // lineage atomically), then drops all but the newest `keep` of the
  // lineage. Returns its path.
  std::string save(LlamaForCausalLMImpl& model, const AdamW& optimizer, const TrainState& state, Communicator& world,
                   const Part& part);

  // Newest complete checkpoint in the directory, if any.
  std::optional<std::string> latest() const;
  // This run's newest: the one it resumed from, then each it saved.
  const std::optional<std::string>& newest() const { return newest_; }
  // What open() moved aside, as a line for the log ("" when nothing).
  const std::string& moved_aside() const { return moved_aside_; }

 private:
  std::string claim(const std::string& resume, bool move_aside);  // rank 0's part of open(); "" or an error
  void prune() const;

  std::string dir_;
  int64_t keep_, interval_;
  Lineage lineage_;
  std::optional<std::string> newest_;
  std::string moved_aside_;
};

// `path` is a step directory, or a directory of them (the newest is used).
std::string resolve_checkpoint(const std::string& path);

// Verifies checksums, then loads this rank's slices of the weights (and, when
// given, of the optimizer state, and the training state). A manifest is
// checked whole first (types, plain file names, slices within their shapes,
// its own checksum): a damaged one is one line naming the file and field.
// `weights_in_segments` (ZeRO-3): the weights are read into the optimizer's
// segments, the rank's shard of the masters, not into the parameters.
void load_checkpoint(const std::string& path, LlamaForCausalLMImpl& model, AdamW* optimizer, TrainState* state,
                     bool weights_in_segments = false);

}  // namespace lt
