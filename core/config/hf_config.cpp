#include "core/config/hf_config.h"

#include <cmath>
#include <fstream>
#include <iterator>
#include <set>
#include <vector>
#include <type_traits>

#include "core/util/error.h"
#include "core/util/json_input.h"

namespace lt {
namespace {

// Reads one key as T, naming the file and key when it is missing or
// mistyped, and remembers which keys were read.
class Reader {
 public:
  Reader(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j_.is_object()) fail(where_ + ": should be a mapping of keys to values, is " + shown(j_));
  }

  template <class T>
  T get(const std::string& key) const {
    if (!has(key)) fail(where_ + ": missing key '" + key + "'");
    return as<T>(key);
  }
  template <class T>
  T get(const std::string& key, T fallback) const {
    return has(key) ? as<T>(key) : fallback;
  }
  bool has(const std::string& key) const {
    read_.insert(key);
    return j_.contains(key) && !j_.at(key).is_null();
  }
  [[noreturn]] void unsupported(const std::string& key, const std::string& why) const {
    fail(where_ + ": " + key + "=" + shown(j_.at(key)) + ": " + why);
  }
  // Keys neither read nor among `harmless`.
  std::vector<std::string> unread(const std::set<std::string>& harmless) const {
    std::vector<std::string> keys;
    for (const auto& [key, value] : j_.items())
      if (!read_.count(key) && !harmless.count(key)) keys.push_back(key);
    return keys;
  }

 private:
  template <class T>
  T as(const std::string& key) const {
    const auto& v = j_.at(key);
    // nlohmann would truncate 4096.5 to an integer and read 1 as true.
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
      if (!v.is_number_integer()) fail(where_ + ": key '" + key + "' should be an integer, is " + shown(v));
    if constexpr (std::is_same_v<T, bool>)
      if (!v.is_boolean()) fail(where_ + ": key '" + key + "' should be true or false, is " + shown(v));
    try {
      return v.get<T>();
    } catch (const nlohmann::json::exception&) {
      fail(where_ + ": key '" + key + "' has the wrong type: " + shown(v));
    }
  }
  const nlohmann::json& j_;
  std::string where_;
  mutable std::set<std::string> read_;
};

// rope_parameters (transformers 5) or rope_theta with rope_scaling (legacy,
// whose type may be under "type" or "rope_type").
void read_rope(const Reader& top, const nlohmann::json& j, const std::string& path, YAML::Node model) {
  const char* key = top.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  top.has("rope_scaling");  // read either way: rope_parameters wins
  const nlohmann::json params = top.has(key) ? j.at(key) : nlohmann::json::object();
  const Reader r(params, path + ": " + key);
  model["rope_theta"] = r.get<double>("rope_theta", top.get<double>("rope_theta", 10000.0));
  if (top.get<double>("partial_rotary_factor", 1.0) != 1.0)
    top.unsupported("partial_rotary_factor", "only full rotary dimensions are implemented");
  if (r.get<double>("partial_rotary_factor", 1.0) != 1.0)
    r.unsupported("partial_rotary_factor", "only full rotary dimensions are implemented");
  std::string type = r.get<std::string>("rope_type", r.get<std::string>("type", "default"));
  if (type != "default" && type != "linear" && type != "dynamic" && type != "yarn" && type != "llama3")
    r.unsupported(r.has("rope_type") ? "rope_type" : "type",
                  "longtrain implements default, linear, dynamic, yarn, llama3");
  if (type == "default") {
    for (const auto& unknown : r.unread({})) r.unsupported(unknown, "a RoPE parameter of no default RoPE");
    return;
  }
  if (!r.get<bool>("truncate", true)) r.unsupported("truncate", "YaRN is implemented with truncated bounds only");
  const int64_t max_positions = top.get<int64_t>("max_position_embeddings");
  YAML::Node rope = model["rope"];
  rope["type"] = type;
  const int64_t original = r.get<int64_t>("original_max_position_embeddings", max_positions);
  if (type == "dynamic" && original != max_positions)
    r.unsupported("original_max_position_embeddings",
                  "dynamic NTK scales from max_position_embeddings; longtrain implements no other start");
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
  for (const auto& unknown : r.unread({})) r.unsupported(unknown, "a RoPE parameter longtrain does not implement");
}

// Each family's class; its model_type is the family's spelling.
const char* architecture(Family family) {
  switch (family) {
    case Family::llama:
      return "LlamaForCausalLM";
    case Family::mistral:
      return "MistralForCausalLM";
    case Family::qwen2:
      return "Qwen2ForCausalLM";
    case Family::qwen3:
      return "Qwen3ForCausalLM";
    case Family::qwen2_moe:
      return "Qwen2MoeForCausalLM";
    case Family::qwen3_moe:
      return "Qwen3MoeForCausalLM";
    case Family::mixtral:
      return "MixtralForCausalLM";
  }
  return "";
}

// The family whose model_type is `type`; refused, listing them all, when none is.
Family family_of(const Reader& c, const std::string& type) {
  std::string all;
  const size_t n = std::size(Spellings<Family>::all);
  for (size_t i = 0; i < n; ++i) {
    const auto& [family, spelling] = Spellings<Family>::all[i];
    if (type == spelling) return family;
    all += (i == 0 ? "" : i + 1 == n ? " and " : ", ") + std::string(spelling);
  }
  c.unsupported("model_type", "longtrain imports " + all + " checkpoints");
}

bool is_qwen2(Family f) { return f == Family::qwen2 || f == Family::qwen2_moe; }
bool is_qwen3(Family f) { return f == Family::qwen3 || f == Family::qwen3_moe; }
bool is_moe(Family f) { return f == Family::qwen2_moe || f == Family::qwen3_moe || f == Family::mixtral; }

// Keys that describe no part of the model's computation (token ids,
// generation and runtime switches, provenance).
const std::set<std::string> kHarmless = {
    "model_type",      "architectures",        "transformers_version", "torch_dtype",          "dtype",
    "use_cache",       "bos_token_id",         "eos_token_id",         "pad_token_id",         "_name_or_path",
    "tokenizer_class", "output_router_logits", "output_attentions",    "output_hidden_states", "return_dict",
    "pretraining_tp",  "max_window_layers",    "_attn_implementation", "attn_implementation",  "use_return_dict"};

// Sliding-window attention, in each family's spelling: refused unless the
// window covers the whole context.
void refuse_windows(const Reader& c, Family family) {
  // Qwen's windows are switched on by use_sliding_window; the others' by a window.
  const bool has_window = c.has("sliding_window");
  const bool switched = c.get<bool>("use_sliding_window", !is_qwen2(family) && !is_qwen3(family));
  if (switched && has_window) {
    const int64_t window = c.get<int64_t>("sliding_window");
    if (window > 0 && window < c.get<int64_t>("max_position_embeddings"))
      c.unsupported("sliding_window", "sliding-window attention is not implemented (set it to null to attend fully)");
  }
  if (!c.has("layer_types")) return;
  const auto types = c.get<std::vector<std::string>>("layer_types");
  for (const auto& type : types)
    if (type != "full_attention")
      c.unsupported("layer_types", "every layer attends fully in longtrain (\"" + excerpt(type) + "\" is not)");
}

// The mixture-of-experts keys of qwen2_moe, qwen3_moe and mixtral.
void read_moe(const Reader& c, Family family, YAML::Node model) {
  YAML::Node moe = model["moe"];
  const bool mixtral = family == Family::mixtral;
  const int64_t experts =
      c.has("num_experts") && !mixtral ? c.get<int64_t>("num_experts") : c.get<int64_t>("num_local_experts");
  const int64_t top_k = c.get<int64_t>("num_experts_per_tok");
  moe["experts"] = experts;
  moe["top_k"] = top_k;
  // transformers' auxiliary loss scores a uniform router top_k; ours 1.
  moe["balance_coef"] = c.get<double>("router_aux_loss_coef", 0.001) * static_cast<double>(top_k);
  if (mixtral) {
    moe["normalize_top_k"] = true;
    if (c.get<double>("router_jitter_noise", 0.0) != 0)
      c.unsupported("router_jitter_noise", "the router adds no noise in longtrain: set it to 0");
    return;
  }
  moe["expert_intermediate_size"] = c.get<int64_t>("moe_intermediate_size");
  moe["every"] = c.get<int64_t>("decoder_sparse_step", 1);
  moe["normalize_top_k"] = c.get<bool>("norm_topk_prob", false);
  moe["dense_layers"] = c.get<std::vector<int64_t>>("mlp_only_layers", {});
  if (family == Family::qwen2_moe)
    moe["shared_expert_intermediate_size"] = c.get<int64_t>("shared_expert_intermediate_size");
}

}  // namespace

YAML::Node model_keys_from_hf(const std::string& dir) {
  const std::string path = dir + "/config.json";
  if (!std::ifstream(path)) fail(path + ": cannot open (is this a Hugging Face model directory?)");
  const nlohmann::json j = read_json_file(path);
  const Reader c(j, path);
  const auto type = c.get<std::string>("model_type");
  const Family family = family_of(c, type);
  if (c.has("architectures")) {
    const auto classes = c.get<std::vector<std::string>>("architectures");
    if (classes != std::vector<std::string>{architecture(family)})
      c.unsupported("architectures", "longtrain reads a " + type + " checkpoint as " + architecture(family) +
                                         " (a causal language model) only");
  }
  if (c.get<std::string>("hidden_act", "silu") != "silu") c.unsupported("hidden_act", "the MLP is SwiGLU (silu)");
  if (c.get<bool>("mlp_bias", false)) c.unsupported("mlp_bias", "the MLP has no biases");
  if (c.get<bool>("use_mrope", false)) c.unsupported("use_mrope", "multimodal RoPE is not implemented");
  if (c.get<double>("attention_dropout", 0.0) != 0)
    c.unsupported("attention_dropout", "longtrain trains without dropout: set it to 0");
  refuse_windows(c, family);
  YAML::Node model;
  model["family"] = type;
  model["vocab_size"] = c.get<int64_t>("vocab_size");
  model["hidden_size"] = c.get<int64_t>("hidden_size");
  model["intermediate_size"] = c.get<int64_t>("intermediate_size");
  model["num_layers"] = c.get<int64_t>("num_hidden_layers");
  model["num_heads"] = c.get<int64_t>("num_attention_heads");
  model["num_kv_heads"] = c.get<int64_t>("num_key_value_heads", c.get<int64_t>("num_attention_heads"));
  if (c.has("head_dim")) model["head_dim"] = c.get<int64_t>("head_dim");
  model["max_seq_len"] = c.get<int64_t>("max_position_embeddings");
  model["rms_norm_eps"] = c.get<double>("rms_norm_eps");
  // Qwen2's q/k/v biases; elsewhere attention_bias would add o_proj's too.
  if (is_qwen2(family)) {
    model["attention_bias"] = c.get<bool>("qkv_bias", true);
  } else {
    model["attention_bias"] = false;
    if (c.get<bool>("attention_bias", false))
      c.unsupported("attention_bias", "longtrain's attention biases are Qwen2's (q, k, v), without o_proj's");
  }
  model["qk_norm"] = is_qwen3(family);
  model["tie_embeddings"] = c.get<bool>("tie_word_embeddings", false);
  if (c.has("initializer_range")) model["init_std"] = c.get<double>("initializer_range");
  read_rope(c, j, path, model);
  if (is_moe(family)) read_moe(c, family, model);
  const auto unread = c.unread(kHarmless);
  if (!unread.empty())
    c.unsupported(unread.front(), "not a key longtrain reads for model_type " + type +
                                      ": it may change the model, so the import stops (remove the key from "
                                      "config.json if it does not)");
  return model;
}

std::string hf_export_problem(const ModelConfig& m) {
  const Family f = m.family;
  const std::string family = "model.family " + name(f);
  if (m.attention_bias != is_qwen2(f))
    return family + (m.attention_bias ? " has no q/k/v biases (model.attention_bias): qwen2 and qwen2_moe do"
                                      : " has q/k/v biases: set model.attention_bias: true");
  if (m.qk_norm != is_qwen3(f))
    return family + (m.qk_norm ? " has no q/k norms (model.qk_norm): qwen3 and qwen3_moe do"
                               : " normalises q and k: set model.qk_norm: true");
  if (m.moe.enabled() != is_moe(f))
    return family + (m.moe.enabled() ? " is dense (model.moe.experts: 0): qwen2_moe, qwen3_moe and mixtral are not"
                                     : " is a mixture of experts: set model.moe.experts");
  if ((m.moe.shared_expert_intermediate_size > 0) != (f == Family::qwen2_moe) && m.moe.enabled())
    return family + (f == Family::qwen2_moe ? " has a shared expert: set model.moe.shared_expert_intermediate_size"
                                            : " has no shared expert (model.moe.shared_expert_intermediate_size): "
                                              "qwen2_moe does");
  if (f == Family::mixtral && (m.moe.every != 1 || !m.moe.dense_layers.empty() || !m.moe.normalize_top_k ||
                               m.expert_columns() != m.intermediate_size))
    return family +
           " has experts in every layer (model.moe.every 1, no dense_layers), of width "
           "model.intermediate_size, their weights renormalised (model.moe.normalize_top_k: true)";
  return "";
}

nlohmann::ordered_json hf_config_json(const ModelConfig& m, const std::string& dtype) {
  if (const auto problem = hf_export_problem(m); !problem.empty()) fail("export: " + problem);
  const Family f = m.family;
  nlohmann::ordered_json j;
  j["architectures"] = {architecture(f)};
  j["model_type"] = name(f);
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
  if (f == Family::llama) j["mlp_bias"] = false;
  if (!is_qwen2(f) && f != Family::mistral && f != Family::mixtral) j["attention_bias"] = false;
  if (f == Family::qwen2_moe) j["qkv_bias"] = true;
  if (is_qwen2(f) || is_qwen3(f)) j["use_sliding_window"] = false;
  if (f == Family::mistral || f == Family::mixtral) j["sliding_window"] = nullptr;
  j["tie_word_embeddings"] = m.tie_embeddings;
  j["initializer_range"] = m.init_std;
  j["torch_dtype"] = dtype;
  if (m.moe.enabled()) {
    const auto& e = m.moe;
    j[f == Family::mixtral ? "num_local_experts" : "num_experts"] = e.experts;
    j["num_experts_per_tok"] = e.top_k;
    j["router_aux_loss_coef"] = e.balance_coef / static_cast<double>(e.top_k);
    if (f == Family::mixtral) {
      j["router_jitter_noise"] = 0.0;
    } else {
      j["moe_intermediate_size"] = m.expert_columns();
      j["decoder_sparse_step"] = e.every;
      j["mlp_only_layers"] = e.dense_layers;
      j["norm_topk_prob"] = e.normalize_top_k;
    }
    if (f == Family::qwen2_moe) j["shared_expert_intermediate_size"] = e.shared_expert_intermediate_size;
  }
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
