// HF transformers' config.json for the families longtrain implements
// (model_type llama, mistral, qwen2, qwen3, qwen2_moe, qwen3_moe, mixtral):
// read as recipe keys of the model section, and written from a
// ModelConfig so that transformers loads what we export.
#pragma once
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/config/config.h"

namespace lt {

// <dir>/config.json as model keys (family, hidden_size, rope, moe, ...).
// Strict: every key is read, known not to change the model (token ids,
// use_cache, ...), or refused in one line naming the file and key, as is
// every value describing what longtrain does not implement (sliding
// windows, biases it lacks, partial rotary, unknown RoPE types).
YAML::Node model_keys_from_hf(const std::string& dir);

// Why `model` cannot be written as its model.family's HF class (a feature
// that class lacks, or lacks one that class has); "" when it can.
std::string hf_export_problem(const ModelConfig& model);

// config.json for `model`, its weights stored as `dtype` (bfloat16, float16
// or float32), as its family's class. Written in the form transformers 4.43+
// and 5 both read (rope_theta with rope_scaling). Fails with
// hf_export_problem's reason.
nlohmann::ordered_json hf_config_json(const ModelConfig& model, const std::string& dtype);

}  // namespace lt
