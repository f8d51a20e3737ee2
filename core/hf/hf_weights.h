// Weights in HF's safetensors layout: one model.safetensors, or shards named
// by model.safetensors.index.json. Our parameter names are HF's.
#pragma once
#include <string>
#include <vector>

#include "core/model/llama.h"

namespace lt {

// Copies this rank's slice of every parameter of `model` from the HF model
// directory `dir`. The files are memory-mapped and only the slices read;
// F32, BF16 and F16 are converted to the parameters' type. Fails naming the
// file and tensor when a shard or tensor is missing, a shape differs or the
// dtype is not one of those.
void load_hf_weights(const std::string& dir, LlamaForCausalLMImpl& model);

struct HfExportOptions {
  std::string dtype = "bfloat16";  // bfloat16 | float16 | float32
  double shard_gb = 5;             // files above this are split into shards with an index
  bool replace = false;            // an export already at the path is swapped out once the new one is whole
};

// The files a model's tokenizer and generation settings live in, copied by
// export_hf from `tokenizer_from` where present.
extern const std::vector<std::string> kHfTokenizerFiles;

// ", with tokenizer.json, ... from DIR" for an export's copied files; "" for none.
std::string describe_copied(const std::vector<std::string>& copied, const std::string& from);

// Writes `model` (a whole, unsplit model of `config`) to the directory `out`
// as config.json and safetensors that transformers' from_pretrained loads,
// with the tokenizer files of the HF model directory `tokenizer_from` (the
// run's init.from_hf; empty: none), so lm-eval and vLLM read it as it is. The directory appears complete or not at all;
// it must not exist yet. Returns the names of the tokenizer files copied.
std::vector<std::string> export_hf(const ModelConfig& config, LlamaForCausalLMImpl& model, const std::string& out,
                                   const HfExportOptions& options, const std::string& tokenizer_from = "");

}  // namespace lt
