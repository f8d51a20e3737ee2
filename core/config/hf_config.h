// HF transformers' config.json for the Llama family (model_type llama,
// qwen2, mistral): read as recipe keys of the model section, and written
// from a ModelConfig so that transformers loads what we export.
#pragma once
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/config/config.h"

namespace lt {

// <dir>/config.json as model keys (hidden_size, rope, ...). Fails naming the
// file and key on what is malformed or what we do not support.
YAML::Node model_keys_from_hf(const std::string& dir);

// config.json for `model`, its weights stored as `dtype` (bfloat16, float16
// or float32). Written in the form transformers 4.43+ and 5 both read
// (rope_theta with rope_scaling).
nlohmann::ordered_json hf_config_json(const ModelConfig& model, const std::string& dtype);

}  // namespace lt
