#include "core/config/config.h"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "core/config/fields.h"
#include "core/config/yaml_section.h"
#include "core/config/hf_config.h"
#include "core/util/bf16_support.h"
#include "core/util/error.h"

namespace lt {
namespace fs = std::filesystem;
namespace {

std::string at_mark(const std::string& file, const YAML::Mark& mark) {
  return file + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1) + ": ";
}

// yaml-cpp keeps both entries of a repeated key and reads the first: a
// second `train:` section would be silently ignored.
void refuse_repeated_keys(const YAML::Node& node, const std::string& file) {
  if (node.IsSequence())
    for (const auto& item : node) refuse_repeated_keys(item, file);
  if (!node.IsMap()) return;
  std::map<std::string, YAML::Mark> first;
  for (const auto& item : node) {
    const std::string key = item.first.IsScalar() ? item.first.Scalar() : YAML::Dump(item.first);
    const auto [seen, fresh] = first.emplace(key, item.first.Mark());
    if (!fresh)
      fail(at_mark(file, item.first.Mark()) + "key '" + excerpt(key) + "' appears twice (first at line " +
           std::to_string(seen->second.line + 1) + ", again at line " + std::to_string(item.first.Mark().line + 1) +
           "): keep one");
    refuse_repeated_keys(item.second, file);
  }
}

YAML::Node load_yaml_file(const std::string& path, const char* what) {
  if (!fs::exists(path)) fail(path + ": " + what + " not found");
  try {
    YAML::Node node = YAML::LoadFile(path);
    refuse_repeated_keys(node, path);
    if (!node.IsMap() && !node.IsNull())
      fail(path + ": expected a mapping of sections (model:, data:, train:, ...) at the top level");
    return node.IsNull() ? YAML::Node(YAML::NodeType::Map) : node;
  } catch (const YAML::DeepRecursion& e) {  // yaml-cpp's own bound, whose message says only "bad file"
    fail(at_mark(path, e.mark) + "invalid YAML: nested " + std::to_string(e.depth()) + " levels deep");
  } catch (const YAML::Exception& e) {
    fail(at_mark(path, e.mark) + "invalid YAML: " + e.msg);
  }
}

// "train.lr=3e-4" sets root.train.lr to the YAML value "3e-4".
void apply_override(YAML::Node root, const std::string& text, ConfigSources& sources) {
  const std::string shown = excerpt(text);
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    fail("command line: override '" + shown + "' must look like key.path=value (e.g. train.lr=3e-4)");
  const std::string path = text.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(text.substr(eq + 1));
    refuse_repeated_keys(value, "command line (" + shown + ")");
  } catch (const YAML::DeepRecursion& e) {
    fail("command line: override '" + shown + "': invalid YAML value: nested " + std::to_string(e.depth()) +
         " levels deep");
  } catch (const YAML::Exception& e) {
    fail("command line: override '" + shown + "': invalid YAML value: " + e.msg);
  }
  std::vector<std::string> parts;
  std::stringstream stream(path);
  for (std::string part; std::getline(stream, part, '.');) {
    if (part.empty()) fail("command line: override '" + shown + "' has an empty key in '" + excerpt(path) + "'");
    parts.push_back(part);
  }
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = chain.back()[parts[i]];
    if (next && !next.IsMap() && !next.IsNull())
      fail("command line: override '" + shown + "': '" + excerpt(parts[i]) + "' is not a section");
    if (!next || next.IsNull()) chain.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
    chain.push_back(chain.back()[parts[i]]);
  }
  chain.back()[parts.back()] = value;
  sources.origin[path] = "command line (" + shown + ")";
}

std::vector<fs::path> preset_dirs(const std::string& recipe_path) {
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("LONGTRAIN_CONFIGS")) dirs.emplace_back(fs::path(env) / "models");
  dirs.push_back(fs::absolute(recipe_path).parent_path().parent_path() / "configs" / "models");
#ifdef LT_CONFIG_DIR
  dirs.push_back(fs::path(LT_CONFIG_DIR) / "models");
#endif
  return dirs;
}

// The preset's keys under `target`'s, section by section (model.moe): the
// recipe (or command line) wins key by key.
void merge_preset(YAML::Node target, const YAML::Node& preset, const std::string& path, const std::string& file,
                  ConfigSources& sources) {
  for (const auto& item : preset) {
    const std::string key = item.first.as<std::string>();
    if (target[key] && target[key].IsMap() && item.second.IsMap()) {
      merge_preset(target[key], item.second, path + "." + key, file, sources);
      continue;
    }
    if (target[key]) continue;
    target[key] = item.second;
    sources.origin[path + "." + key] = file;
  }
}

// The text of the name-like key `section.key` (model.preset, init.from_hf),
// empty when absent.
std::string name_at(const YAML::Node& root, const std::string& section, const std::string& key,
                    const ConfigSources& sources) {
  const YAML::Node parent = root[section];
  if (!parent || !parent.IsMap() || !parent[key]) return "";
  const YAML::Node node = parent[key];
  if (!node.IsScalar() && !node.IsNull())
    fail(sources.locate(section + "." + key) + section + "." + key + ": expected a name, got a " +
         (node.IsMap() ? "mapping" : "list"));
  return node.IsNull() ? "" : node.as<std::string>();
}

// model.preset: NAME merges configs/models/NAME.yaml under the recipe's model keys.
void apply_preset(YAML::Node root, ConfigSources& sources) {
  const std::string name = name_at(root, "model", "preset", sources);
  if (name.empty()) return;
  YAML::Node model = root["model"];
  std::string found, known;
  for (const auto& dir : preset_dirs(sources.recipe_file)) {
    if (fs::exists(dir / (name + ".yaml"))) {
      found = (dir / (name + ".yaml")).string();
      break;
    }
    if (known.empty() && fs::is_directory(dir))
      for (const auto& entry : fs::directory_iterator(dir))
        if (entry.path().extension() == ".yaml") known += (known.empty() ? "" : ", ") + entry.path().stem().string();
  }
  if (found.empty())
    fail(sources.locate("model.preset") + "model.preset: no preset '" + name + "' in configs/models/" +
         (known.empty() ? "" : " (available: " + known + ")"));
  merge_preset(model, load_yaml_file(found, "model preset"), "model", found, sources);
}

// init.from_hf: DIR merges the model keys of DIR/config.json under the
// recipe's model keys (the recipe wins: a context extension changes rope
// and max_seq_len).
void apply_hf_config(YAML::Node root, ConfigSources& sources) {
  const std::string dir = name_at(root, "init", "from_hf", sources);
  if (dir.empty()) return;
  if (!name_at(root, "model", "preset", sources).empty())
    fail(sources.locate("init.from_hf") + "init.from_hf takes the model from " + dir +
         "/config.json: remove model.preset");
  if (!root["model"]) root["model"] = YAML::Node(YAML::NodeType::Map);
  if (!root["model"].IsMap()) fail(sources.locate("model") + "model: expected a mapping of model keys");
  merge_preset(root["model"], model_keys_from_hf(dir), "model", dir + "/config.json", sources);
}

[[noreturn]] void relation_error(const ConfigSources& sources, const std::string& path, const std::string& message) {
  fail(sources.locate(path) + message);
}

// What the parallel degrees demand of the model and the sequence, known
// before the world size is (that is checked when the mesh is laid out).
void validate_parallel(const Config& c, const ConfigSources& s) {
  const auto& p = c.parallel;
  const auto& m = c.model;
  // Each degree is at most 65536, their product could still wrap 64 bits.
  constexpr double kMostRanks = 1 << 24;
  const double ranks =
      static_cast<double>(p.tp) * p.sp.ulysses * p.sp.ring * p.pp * (p.dp == "auto" ? 1.0 : std::stod(p.dp));
  if (ranks > kMostRanks) {
    char text[32];
    std::snprintf(text, sizeof(text), "%.3g", ranks);
    relation_error(s, "parallel.tp",
                   "parallel: dp x tp x ulysses x ring x pp = " + std::string(text) + " ranks is more than " +
                       std::to_string(static_cast<int64_t>(kMostRanks)) + ": lower the degrees");
  }
  auto divides = [&](int64_t degree, const std::string& degree_key, int64_t value, const std::string& value_key,
                     const std::string& fix) {
    if (value % degree != 0)
      relation_error(s, degree_key,
                     value_key + "=" + std::to_string(value) + " is not divisible by " + degree_key + "=" +
                         std::to_string(degree) + ": " + fix);
  };
  divides(p.tp, "parallel.tp", m.num_heads, "model.num_heads", "each tensor-parallel rank needs whole heads");
  divides(p.tp, "parallel.tp", m.vocab_size, "model.vocab_size", "pad the vocabulary to a multiple of the degree");
  divides(p.tp, "parallel.tp", m.intermediate_size, "model.intermediate_size", "choose a degree that divides it");
  if (m.num_kv_heads % p.tp != 0 && p.tp % m.num_kv_heads != 0)
    relation_error(s, "parallel.tp",
                   "parallel.tp=" + std::to_string(p.tp) + " and model.num_kv_heads=" + std::to_string(m.num_kv_heads) +
                       " must divide one another (kv heads are split or replicated)");
  if (m.num_heads / p.tp < p.sp.ulysses)
    relation_error(s, "parallel.sp.ulysses",
                   "parallel.sp.ulysses=" + std::to_string(p.sp.ulysses) + " exceeds the " +
                       std::to_string(m.num_heads / p.tp) +
                       " heads of a tensor-parallel rank: Ulysses gives each rank a head");
  if (m.moe.enabled())
    divides(p.ep, "parallel.ep", m.moe.experts, "model.moe.experts", "each expert-parallel rank holds whole experts");
  if (m.moe.enabled() && p.tp > 1)
    relation_error(s, "model.moe.experts",
                   "mixture-of-experts layers are not yet split by tensor parallelism: set parallel.tp=1");
  if (p.pp > m.num_layers)
    relation_error(s, "parallel.pp",
                   "parallel.pp=" + std::to_string(p.pp) + " exceeds model.num_layers=" + std::to_string(m.num_layers) +
                       ": every pipeline stage needs a layer");
}

// Scaled RoPE needs the context the model was pretrained on.
void validate_rope(const RopeConfig& r, const ConfigSources& s) {
  if (!r.scaled()) return;
  if (r.type != RopeType::linear && r.original_max_seq_len <= 0)
    relation_error(s, "model.rope.type",
                   "model.rope.type=" + name(r.type) +
                       " needs model.rope.original_max_seq_len: the pretrained context "
                       "(HF original_max_position_embeddings), e.g. 8192");
  if (r.type == RopeType::llama3 && r.high_freq_factor <= r.low_freq_factor)
    relation_error(s, "model.rope.high_freq_factor",
                   "model.rope.high_freq_factor must exceed model.rope.low_freq_factor (Llama 3.1: 4 and 1)");
}

// Adaptive sequence parallelism chooses the Ulysses groups itself, over
// ranks that each hold the whole dense model.
void validate_adaptive(const Config& c, const ConfigSources& s) {
  const auto& p = c.parallel;
  if (p.sp_degree() > 1 || p.tp > 1 || p.pp > 1 || p.ep > 1 || c.model.moe.enabled() || c.memory.offload_model ||
      c.memory.plan != PlanMode::manual)
    relation_error(s, "data.packing",
                   "data.packing: adaptive forms its own sequence-parallel groups over ranks holding the whole dense "
                   "model: set parallel.sp.ulysses, sp.ring, tp, pp and ep to 1, and use no MoE, "
                   "memory.offload_model or memory.plan: auto");
  const auto& a = p.adaptive;
  for (const auto& [key, value] : {std::pair{"group", a.group}, {"max_group", a.max_group}})
    if (value & (value - 1))
      relation_error(s, std::string("parallel.adaptive.") + key,
                     std::string("parallel.adaptive.") + key + "=" + std::to_string(value) +
                         " must be a power of two (or 0): groups are aligned blocks of ranks");
  if (a.group > c.model.num_heads || a.max_group > c.model.num_heads)
    relation_error(s, a.group ? "parallel.adaptive.group" : "parallel.adaptive.max_group",
                   "a Ulysses group gives each rank a head: groups may not exceed model.num_heads=" +
                       std::to_string(c.model.num_heads));
}

// Fills the defaults that depend on other keys, then checks relations between keys.
void complete_and_validate(Config& c, const ConfigSources& s) {
  const auto& m = c.model;
  validate_rope(m.rope, s);
  const auto& p = c.parallel;
  if (c.checkpoint.export_hf != ExportDtype::none)
    if (const auto problem = hf_export_problem(m); !problem.empty())
      relation_error(s, "model.family",
                     "checkpoint.export_hf writes the model as its family's HF class, but " + problem);
  const bool manual = c.memory.plan == PlanMode::manual;
  if (!manual && c.memory.device_budget_gb <= 0)
    relation_error(s, "memory.plan",
                   "memory.plan: auto fits the step into memory.device_budget_gb: set the budget (GiB per rank)");
  if (manual && c.memory.offload_activations && c.memory.checkpoint == Recompute::none)
    relation_error(s, "memory.offload_activations",
                   "memory.offload_activations moves the inputs of recomputed layers: set memory.checkpoint "
                   "(full, attention or mlp) too");
  if (manual && c.memory.offload_model && (c.memory.checkpoint != Recompute::full || c.memory.checkpoint_every != 1))
    relation_error(s, "memory.offload_model",
                   "memory.offload_model brings each layer's weights back when it is recomputed: set "
                   "memory.checkpoint: full and memory.checkpoint_every: 1");
  if (c.memory.offload_model && c.parallel.ep > 1)
    relation_error(s, "memory.offload_model",
                   "memory.offload_model is not yet combined with expert parallelism: set parallel.ep=1");
  if (c.memory.offload_model && c.parallel.tp > 1)
    relation_error(s, "memory.offload_model",
                   "memory.offload_model is not yet combined with tensor parallelism: set parallel.tp=1");
  if (m.moe.enabled() && m.moe.top_k > m.moe.experts)
    relation_error(s, "model.moe.top_k",
                   "model.moe.top_k=" + std::to_string(m.moe.top_k) + " exceeds model.moe.experts=" +
                       std::to_string(m.moe.experts) + ": a token cannot choose more experts than exist");
  // The grouped products read rows and weights in 16-byte strides.
  if (m.moe.enabled() && (m.hidden_size % 8 != 0 || m.expert_columns() % 8 != 0))
    relation_error(s, "model.moe.expert_intermediate_size",
                   "the experts run as grouped matrix products, which need model.hidden_size (" +
                       std::to_string(m.hidden_size) + ") and the expert width (" + std::to_string(m.expert_columns()) +
                       ") to be multiples of 8");
  for (int64_t layer : m.moe.dense_layers)
    if (layer >= m.num_layers)
      relation_error(s, "model.moe.dense_layers",
                     "model.moe.dense_layers names layer " + std::to_string(layer) + " of a model of " +
                         std::to_string(m.num_layers) + " layers (they count from 0)");
  if (m.moe.enabled() && c.memory.mlp_tiles != "1")
    relation_error(s, "memory.mlp_tiles",
                   "memory.mlp_tiles tiles the dense MLP; a mixture-of-experts model needs memory.mlp_tiles: 1");
  if (m.num_heads % m.num_kv_heads != 0)
    relation_error(s, "model.num_kv_heads",
                   "model.num_heads=" + std::to_string(m.num_heads) + " is not divisible by model.num_kv_heads=" +
                       std::to_string(m.num_kv_heads) + ": choose kv heads that divide the heads");
  if (m.head_dim == 0 && m.hidden_size % m.num_heads != 0)
    relation_error(s, "model.num_heads",
                   "model.hidden_size=" + std::to_string(m.hidden_size) + " is not divisible by model.num_heads=" +
                       std::to_string(m.num_heads) + ": set model.head_dim or change the heads");
  if (m.resolved_head_dim() % 2 != 0)
    relation_error(s, "model.head_dim",
                   "model head_dim=" + std::to_string(m.resolved_head_dim()) + " must be even for rotary embeddings");
  auto& d = c.data;
  if (d.source == DataSourceKind::indexed && d.path.empty() == d.mixture.empty())
    relation_error(s, "data.path",
                   "data.source 'indexed' reads data.path (prefix of .bin/.idx) or data.mixture (several, "
                   "weighted): set exactly one");
  if (d.source != DataSourceKind::indexed && (!d.mixture.empty() || d.upsample_long.min_length > 0))
    relation_error(s, d.mixture.empty() ? "data.upsample_long" : "data.mixture",
                   "data.mixture and data.upsample_long read Megatron datasets: set data.source: indexed");
  if ((d.upsample_long.min_length > 0) != (d.upsample_long.share > 0))
    relation_error(s, "data.upsample_long",
                   "data.upsample_long needs both min_length (tokens) and share (of each dataset's tokens), "
                   "e.g. {min_length: 32K, share: 0.5}");
  if (d.source == DataSourceKind::passkey) {
    if (d.passkey.min_doc_len > d.passkey.max_doc_len)
      relation_error(s, "data.passkey.min_doc_len", "data.passkey.min_doc_len must be <= data.passkey.max_doc_len");
    const int64_t needed = 5 + 10 * d.passkey.digits + 32;  // specials, digit alphabets, some filler
    if (m.vocab_size < needed)
      relation_error(s, "model.vocab_size",
                     "model.vocab_size=" + std::to_string(m.vocab_size) + " is too small for a passkey of " +
                         std::to_string(d.passkey.digits) + " digits: use at least " + std::to_string(needed));
    if (d.passkey.min_doc_len < 4 * d.passkey.digits + 16)
      relation_error(
          s, "data.passkey.min_doc_len",
          "data.passkey.min_doc_len must be >= 4 * digits + 16 = " + std::to_string(4 * d.passkey.digits + 16));
    // A retrieval sample holds the key twice, the question and some filler.
    const int64_t shortest = 2 * d.passkey.digits + 7;
    const bool lengths_given = !c.eval.passkey_lengths.empty();
    for (size_t i = 0; c.eval.passkey_samples > 0 && i < std::max<size_t>(1, c.eval.passkey_lengths.size()); ++i) {
      const int64_t length = lengths_given ? c.eval.passkey_lengths[i] : d.seq_len;
      const std::string key = lengths_given ? "eval.passkey_lengths[" + std::to_string(i) + "]" : "data.seq_len";
      if (length < shortest)
        relation_error(s, lengths_given ? "eval.passkey_lengths" : "data.seq_len",
                       key + "=" + std::to_string(length) + " cannot hold a passkey of " +
                           std::to_string(d.passkey.digits) + " digits and its question: evaluate at >= " +
                           std::to_string(shortest) + " tokens, or set eval.passkey_samples: 0");
    }
  }
  if (d.packing == Packing::adaptive) validate_adaptive(c, s);
  auto& t = c.train;
  t.precision = resolve_precision(t.precision, t.device);
  if (t.bf16() && !bf16_is_fast(t.device))
    relation_error(s, "train.precision",
                   "train.precision: bf16 needs bf16 matrix instructions, and this CPU has neither AMX-BF16 nor "
                   "AVX512-BF16 (emulated bf16 runs slower than fp32): set train.precision: fp32, or auto");
  if (p.emulate_nccl && t.device == DeviceKind::cuda)
    relation_error(s, "parallel.emulate_nccl",
                   "parallel.emulate_nccl emulates NCCL's ordering on CPU; with train.device: cuda NCCL itself runs: "
                   "set parallel.emulate_nccl: false, or train.device: cpu");
  if (p.reduce_dtype == WireDtype::bf16 && !t.bf16())
    relation_error(
        s, "parallel.reduce_dtype",
        "parallel.reduce_dtype: bf16 rounds gradients of bf16 compute; with train.precision: " + name(t.precision) +
            " reduce in fp32 (parallel.reduce_dtype: fp32) or set train.precision: bf16");
  if (t.global_batch_tokens == 0) t.global_batch_tokens = d.seq_len * t.micro_batch_size;
  for (size_t i = 0; i <= d.curriculum.size(); ++i) {  // every stage, then the final length
    const bool final = i == d.curriculum.size();
    const int64_t length = final ? d.seq_len : d.curriculum[i].seq_len;
    const std::string key = final ? "data.seq_len" : "data.curriculum[" + std::to_string(i) + "].seq_len";
    if (!final && i > 0 && d.curriculum[i].until_step <= d.curriculum[i - 1].until_step)
      relation_error(s, "data.curriculum", "data.curriculum: until_step must increase from stage to stage");
    if (t.global_batch_tokens % length != 0)
      relation_error(s, "train.global_batch_tokens",
                     "train.global_batch_tokens=" + std::to_string(t.global_batch_tokens) + " is not a multiple of " +
                         key + "=" + std::to_string(length) + ": use for example " +
                         std::to_string(std::max<int64_t>(1, t.global_batch_tokens / length) * length));
    if ((t.global_batch_tokens / length) % t.micro_batch_size != 0)
      relation_error(s, "train.micro_batch_size",
                     "train.micro_batch_size=" + std::to_string(t.micro_batch_size) + " does not divide the " +
                         std::to_string(t.global_batch_tokens / length) + " sequences of a step at " + key + "=" +
                         std::to_string(length) + " (global_batch_tokens / seq_len)");
  }
  const auto& profile = c.profile;
  if (profile.enabled() && (profile.last_step() < profile.start_step || profile.last_step() > t.steps))
    relation_error(s, "profile.end_step",
                   "profile: steps " + std::to_string(profile.start_step) + " to " +
                       std::to_string(profile.last_step()) + " must lie within the run's " + std::to_string(t.steps) +
                       " steps, end_step >= start_step (or 0: start_step alone)");
  if (t.min_lr > t.lr)
    relation_error(s, "train.min_lr",
                   "train.min_lr=" + std::to_string(t.min_lr) + " must be <= train.lr=" + std::to_string(t.lr));
  if (t.warmup_steps > t.steps)
    relation_error(
        s, "train.warmup_steps",
        "train.warmup_steps=" + std::to_string(t.warmup_steps) + " must be <= train.steps=" + std::to_string(t.steps));
  validate_parallel(c, s);
}

// The shortest text that reads back as exactly `value` (0.003, not
// 0.0030000000000000001).
std::string shortest(double value) {
  char text[32];
  const auto end = std::to_chars(text, text + sizeof(text), value).ptr;
  return std::string(text, end);
}

class Printer {
 public:
  explicit Printer(YAML::Emitter& out) : out_(out) {}
  template <class T, class C = int>
  void field(const char* key, const T& value, const C& = {}) {
    out_ << YAML::Key << key << YAML::Value;
    if constexpr (std::is_enum_v<T>) out_ << name(value);
    else if constexpr (std::is_same_v<T, double>) out_ << shortest(value);
    else out_ << value;
  }
  template <class T>
  void section(const char* key, T& value) {
    out_ << YAML::Key << key << YAML::Value << YAML::BeginMap;
    visit(*this, value);
    out_ << YAML::EndMap;
  }

  template <class T>
  void list(const char* key, std::vector<T>& values) {
    out_ << YAML::Key << key << YAML::Value << YAML::BeginSeq;
    for (auto& value : values) {
      out_ << YAML::BeginMap;
      visit(*this, value);
      out_ << YAML::EndMap;
    }
    out_ << YAML::EndSeq;
  }

 private:
  YAML::Emitter& out_;
};

}  // namespace

Config load_config(const std::string& recipe_path, const std::vector<std::string>& overrides) {
  auto sources = std::make_shared<ConfigSources>();
  sources->recipe_file = recipe_path;
  sources->root = load_yaml_file(recipe_path, "recipe");
  for (const auto& text : overrides) apply_override(sources->root, text, *sources);
  apply_preset(sources->root, *sources);
  apply_hf_config(sources->root, *sources);

  Config config;
  config.source_file = recipe_path;
  Section top(sources->root, "", sources);
  visit(top, config);
  top.finish();
  complete_and_validate(config, *sources);
  return config;
}

std::string to_yaml(const Config& config) {
  Config copy = config;
  YAML::Emitter out;
  out << YAML::BeginMap;
  Printer printer(out);
  visit(printer, copy);
  out << YAML::EndMap;
  return out.c_str();
}

}  // namespace lt
