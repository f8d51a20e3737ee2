#include "core/config/hf_config.h"

#include <cmath>
#include <fstream>
#include <type_traits>

#include "core/util/error.h"

namespace lt {
namespace {

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(path + ": cannot open (is this a Hugging Face model directory?)");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(path + ": malformed JSON: " + e.what());
  }
}

// Reads one key as T, naming the file and key when it is missing or mistyped.
class Reader {
 public:
  Reader(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {}

  template <class T>
  T get(const std::string& key) const {
    if (!has(key)) fail(where_ + ": missing key '" + key + "'");
    return as<T>(key);
  }
  template <class T>
  T get(const std::string& key, T fallback) const {
    return has(key) ? as<T>(key) : fallback;
  }
  bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  [[noreturn]] void unsupported(const std::string& key, const std::string& why) const {
    fail(where_ + ": " + key + "=" + j_.at(key).dump() + ": " + why);
  }

 private:
  template <class T>
  T as(const std::string& key) const {
    const auto& v = j_.at(key);
    // nlohmann would truncate 4096.5 to an integer and read 1 as true.
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
      if (!v.is_number_integer()) fail(where_ + ": key '" + key + "' should be an integer, is " + v.dump());
    if constexpr (std::is_same_v<T, bool>)
      if (!v.is_boolean()) fail(where_ + ": key '" + key + "' should be true or false, is " + v.dump());
    try {
      return v.get<T>();
    } catch (const nlohmann::json::exception&) {
      fail(where_ + ": key '" + key + "' has the wrong type: " + j_.at(key).dump());
    }
  }
  const nlohmann::json& j_;
  std::string where_;
};

// rope_parameters (transformers 5) or rope_theta with rope_scaling (legacy,
// whose type may be under "type" or "rope_type").
void read_rope(const nlohmann::json& j, const std::string& path, YAML::Node model) {
  const Reader top(j, path);
  const char* key = top.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  const nlohmann::json params = top.has(key) ? j.at(key) : nlohmann::json::object();
  const Reader r(params, path + ": " + key);
  model["rope_theta"] = r.get<double>("rope_theta", top.get<double>("rope_theta", 10000.0));
  std::string type = r.get<std::string>("rope_type", r.get<std::string>("type", "default"));
  if (type == "default") return;
  if (type != "linear" && type != "dynamic" && type != "yarn" && type != "llama3")
    r.unsupported(r.has("rope_type") ? "rope_type" : "type",
                  "longtrain implements default, linear, dynamic, yarn, llama3");
  if (r.get<double>("partial_rotary_factor", 1.0) != 1.0)
    r.unsupported("partial_rotary_factor", "only full rotary dimensions are implemented");
  if (!r.get<bool>("truncate", true)) r.unsupported("truncate", "YaRN is implemented with truncated bounds only");
  const int64_t max_positions = top.get<int64_t>("max_position_embeddings");
  YAML::Node rope = model["rope"];
  rope["type"] = type;
  const int64_t original =
      type == "dynamic" ? max_positions : r.get<int64_t>("original_max_position_embeddings", max_positions);
  rope["original_max_seq_len"] = original;
  rope["factor"] = r.has("factor") ? r.get<double>("factor") : static_cast<double>(max_positions) / original;
  if (type == "llama3") {
    rope["low_freq_factor"] = r.get<double>("low_freq_factor");
    rope["high_freq_factor"] = r.get<double>("high_freq_factor");
  }
  if (type == "yarn") {
    rope["beta_fast"] = r.get<double>("beta_fast", 32.0);
    rope["beta_slow"] = r.get<double>("beta_slow", 1.0);
    const double factor = rope["factor"].as<double>();
    auto mscale = [factor](double m) { return factor <= 1 ? 1.0 : 0.1 * m * std::log(factor) + 1.0; };
    if (r.has("attention_factor")) rope["attention_factor"] = r.get<double>("attention_factor");
    else if (r.has("mscale") && r.has("mscale_all_dim"))
      rope["attention_factor"] = mscale(r.get<double>("mscale")) / mscale(r.get<double>("mscale_all_dim"));
  }
}

}  // namespace

YAML::Node model_keys_from_hf(const std::string& dir) {
  const std::string path = dir + "/config.json";
  const nlohmann::json j = read_json(path);
  const Reader c(j, path);
  const auto type = c.get<std::string>("model_type");
  if (type != "llama" && type != "qwen2" && type != "mistral")
    c.unsupported("model_type", "longtrain imports llama, qwen2 and mistral checkpoints");
  if (c.get<std::string>("hidden_act", "silu") != "silu") c.unsupported("hidden_act", "the MLP is SwiGLU (silu)");
  if (c.get<bool>("mlp_bias", false)) c.unsupported("mlp_bias", "the MLP has no biases");
  const bool windowed = type == "qwen2" ? c.get<bool>("use_sliding_window", false) : c.has("sliding_window");
  if (windowed && c.get<int64_t>("sliding_window") < c.get<int64_t>("max_position_embeddings"))
    c.unsupported("sliding_window", "sliding-window attention is not implemented (set it to null to attend fully)");
  YAML::Node model;
  model["vocab_size"] = c.get<int64_t>("vocab_size");
  model["hidden_size"] = c.get<int64_t>("hidden_size");
  model["intermediate_size"] = c.get<int64_t>("intermediate_size");
  model["num_layers"] = c.get<int64_t>("num_hidden_layers");
  model["num_heads"] = c.get<int64_t>("num_attention_heads");
  model["num_kv_heads"] = c.get<int64_t>("num_key_value_heads", c.get<int64_t>("num_attention_heads"));
  if (c.has("head_dim")) model["head_dim"] = c.get<int64_t>("head_dim");
  model["max_seq_len"] = c.get<int64_t>("max_position_embeddings");
  model["rms_norm_eps"] = c.get<double>("rms_norm_eps");
  model["attention_bias"] = type == "qwen2" || c.get<bool>("attention_bias", false);
  model["tie_embeddings"] = c.get<bool>("tie_word_embeddings", false);
  if (c.has("initializer_range")) model["init_std"] = c.get<double>("initializer_range");
  read_rope(j, path, model);
  return model;
}

nlohmann::ordered_json hf_config_json(const ModelConfig& m, const std::string& dtype) {
  if (m.moe.enabled()) fail("export: mixture-of-experts models cannot be exported to HF format yet");
  // Qwen2 is Llama with q/k/v biases; every other model we train is a Llama.
  const bool qwen2 = m.attention_bias;
  nlohmann::ordered_json j;
  j["architectures"] = {qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = qwen2 ? "qwen2" : "llama";
  j["vocab_size"] = m.vocab_size;
  j["hidden_size"] = m.hidden_size;
  j["intermediate_size"] = m.intermediate_size;
  j["num_hidden_layers"] = m.num_layers;
  j["num_attention_heads"] = m.num_heads;
  j["num_key_value_heads"] = m.num_kv_heads;
  j["head_dim"] = m.resolved_head_dim();
  j["hidden_act"] = "silu";
  // HF's dynamic NTK scales beyond max_position_embeddings at run time.
  j["max_position_embeddings"] = m.rope.type == RopeType::dynamic ? m.rope.original_max_seq_len : m.max_seq_len;
  j["rms_norm_eps"] = m.rms_norm_eps;
  j["rope_theta"] = m.rope_theta;
  if (!qwen2) j["attention_bias"] = false, j["mlp_bias"] = false;
  else j["use_sliding_window"] = false;
  j["tie_word_embeddings"] = m.tie_embeddings;
  j["initializer_range"] = m.init_std;
  j["torch_dtype"] = dtype;
  const auto& r = m.rope;
  if (!r.scaled()) {
    j["rope_scaling"] = nullptr;
    return j;
  }
  nlohmann::ordered_json s = {{"rope_type", name(r.type)}, {"factor", r.factor}};
  if (r.type != RopeType::linear && r.type != RopeType::dynamic)
    s["original_max_position_embeddings"] = r.original_max_seq_len;
  if (r.type == RopeType::llama3) s["low_freq_factor"] = r.low_freq_factor, s["high_freq_factor"] = r.high_freq_factor;
  if (r.type == RopeType::yarn) {
    s["beta_fast"] = r.beta_fast, s["beta_slow"] = r.beta_slow;
    if (r.attention_factor > 0) s["attention_factor"] = r.attention_factor;
  }
  j["rope_scaling"] = s;
  return j;
}

}  // namespace lt
