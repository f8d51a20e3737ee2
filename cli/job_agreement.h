// Before any work, the ranks of a job agree that they run one job: the same
// resolved recipe and the same inputs (data files by size and index
// checksum, the HF model, the checkpoint to start from). Ranks given
// different command lines, recipes or files would otherwise train silently
// apart, or meet in mismatched collectives. Each rank's part of the layout
// is derived from these and may differ; nothing else may.
#pragma once
#include <string>
#include <vector>

#include "core/config/config.h"

namespace lt {

// "key: value" lines that identify the job on this rank: every resolved
// recipe key, then each input file's identity. `checkpoint`: a checkpoint
// the command loads besides the recipe's (eval --checkpoint), or empty.
std::vector<std::string> job_identity(const Config& config, const std::string& checkpoint);

// The first line on which `by_rank` differ, as a message naming the key
// and which ranks hold which value; empty when every rank agrees.
std::string disagreement(const std::vector<std::vector<std::string>>& by_rank);

// Gathers every rank's identity; on a difference every rank throws the same
// AgreedError (rank 0 prints it), so the job ends in one line.
void agree_on_job(const Config& config, const std::string& checkpoint);

}  // namespace lt
