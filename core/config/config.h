// A recipe YAML as typed structs. Defaults live here; the list of keys (and
// their ranges) lives once in fields.h and drives both parsing and printing.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace lt {

// A recipe key with a fixed set of values is an enum, parsed once when the
// recipe is read; each enum's spellings are listed once, here, for the
// reader, the printer and messages.
template <class E>
struct Spellings;
#define LT_SPELLINGS(E, ...)                                          \
  template <>                                                         \
  struct Spellings<E> {                                               \
    static constexpr std::pair<E, const char*> all[] = {__VA_ARGS__}; \
  }

// How a recipe spells `value`.
template <class E>
std::string name(E value) {
  for (const auto& [v, spelling] : Spellings<E>::all)
    if (v == value) return spelling;
  return "?";
}

// The value `text` spells, for programs and tests that take a choice as
// text (a recipe's are read by the config reader); throws naming the
// spellings otherwise.
template <class E>
E parse_choice(const std::string& text) {
  std::string valid;
  for (const auto& [v, spelling] : Spellings<E>::all) {
    if (text == spelling) return v;
    valid += (valid.empty() ? "'" : ", '") + std::string(spelling) + "'";
  }
  throw std::invalid_argument("'" + text + "' is none of " + valid);
}

enum class DropPolicy { probability, position };
LT_SPELLINGS(DropPolicy, {DropPolicy::probability, "probability"}, {DropPolicy::position, "position"});
enum class BalanceScope { micro_batch, global_batch, sequence };
LT_SPELLINGS(BalanceScope, {BalanceScope::micro_batch, "micro_batch"}, {BalanceScope::global_batch, "global_batch"},
             {BalanceScope::sequence, "sequence"});
enum class RopeType { standard, linear, dynamic, yarn, llama3 };
LT_SPELLINGS(RopeType, {RopeType::standard, "default"}, {RopeType::linear, "linear"}, {RopeType::dynamic, "dynamic"},
             {RopeType::yarn, "yarn"}, {RopeType::llama3, "llama3"});
// The Hugging Face architecture a model is read from and written as
// (core/hf/hf_names.h maps its tensor names).
enum class Family { llama, mistral, qwen2, qwen3, qwen2_moe, qwen3_moe, mixtral };
LT_SPELLINGS(Family, {Family::llama, "llama"}, {Family::mistral, "mistral"}, {Family::qwen2, "qwen2"},
             {Family::qwen3, "qwen3"}, {Family::qwen2_moe, "qwen2_moe"}, {Family::qwen3_moe, "qwen3_moe"},
             {Family::mixtral, "mixtral"});
enum class AttentionKernel { automatic, flash, blockwise };
LT_SPELLINGS(AttentionKernel, {AttentionKernel::automatic, "auto"}, {AttentionKernel::flash, "flash"},
             {AttentionKernel::blockwise, "blockwise"});
enum class DataSourceKind { passkey, indexed };
LT_SPELLINGS(DataSourceKind, {DataSourceKind::passkey, "passkey"}, {DataSourceKind::indexed, "indexed"});
enum class Packing { split, whole, adaptive };
LT_SPELLINGS(Packing, {Packing::split, "split"}, {Packing::whole, "whole"}, {Packing::adaptive, "adaptive"});
enum class Schedule { constant, linear, cosine, wsd };
LT_SPELLINGS(Schedule, {Schedule::constant, "constant"}, {Schedule::linear, "linear"}, {Schedule::cosine, "cosine"},
             {Schedule::wsd, "wsd"});
enum class DeviceKind { cpu, cuda };
LT_SPELLINGS(DeviceKind, {DeviceKind::cpu, "cpu"}, {DeviceKind::cuda, "cuda"});
enum class Precision { automatic, fp32, bf16 };
LT_SPELLINGS(Precision, {Precision::automatic, "auto"}, {Precision::fp32, "fp32"}, {Precision::bf16, "bf16"});
enum class SpPlanner { milp, uniform };
LT_SPELLINGS(SpPlanner, {SpPlanner::milp, "milp"}, {SpPlanner::uniform, "uniform"});
enum class WireDtype { fp32, bf16 };
LT_SPELLINGS(WireDtype, {WireDtype::fp32, "fp32"}, {WireDtype::bf16, "bf16"});
enum class Recompute { none, full, attention, mlp };
LT_SPELLINGS(Recompute, {Recompute::none, "none"}, {Recompute::full, "full"}, {Recompute::attention, "attention"},
             {Recompute::mlp, "mlp"});
enum class PlanMode { manual, automatic };
LT_SPELLINGS(PlanMode, {PlanMode::manual, "manual"}, {PlanMode::automatic, "auto"});
enum class ExportDtype { none, bfloat16, float16, float32 };
LT_SPELLINGS(ExportDtype, {ExportDtype::none, ""}, {ExportDtype::bfloat16, "bfloat16"},
             {ExportDtype::float16, "float16"}, {ExportDtype::float32, "float32"});

// Mixture of experts (Qwen2-MoE / Mixtral): in the MoE layers the MLP is a
// router choosing top_k of `experts` SwiGLU experts per token, plus
// optional shared experts every token passes through.
struct MoeConfig {
  int64_t experts = 0;                          // experts of a MoE layer; 0: every layer dense
  int64_t top_k = 2;                            // experts each token is routed to
  int64_t every = 1;                            // layer i is MoE when (i + 1) % every == 0 (HF's decoder_sparse_step)
  int64_t expert_intermediate_size = 0;         // width of each expert's SwiGLU; 0: model.intermediate_size
  int64_t shared_expert_intermediate_size = 0;  // width of the shared expert; 0: none
  bool normalize_top_k = true;                  // the chosen experts' weights sum to one (Mixtral; Qwen2-MoE: false)
  double capacity_factor = 0;  // 0: dropless; else each expert takes at most cf * tokens * top_k / experts
  DropPolicy drop_policy =
      DropPolicy::probability;  // over capacity, drop the lowest-weight (probability) or latest (position)
  // Load balancing over what: each micro-batch, the whole global batch
  // (counts summed over dp x sp and the accumulation), or each sequence.
  BalanceScope balance = BalanceScope::global_batch;
  double balance_coef = 0.01;         // weight of the load-balancing loss (0: none)
  double z_loss_coef = 0;             // router z-loss (ST-MoE)
  std::vector<int64_t> dense_layers;  // layers whose MLP stays dense whatever `every` says (HF's mlp_only_layers)

  bool enabled() const { return experts > 0; }
  bool is_moe_layer(int64_t layer) const {
    for (int64_t dense : dense_layers)
      if (dense == layer) return false;
    return enabled() && (layer + 1) % every == 0;
  }
};

// RoPE scaling for context extension (HF's rope_parameters; see
// core/model/rope_scaling.h for the formulas). A base change (ABF) is
// model.rope_theta alone.
struct RopeConfig {
  RopeType type = RopeType::standard;  // how RoPE is scaled for a longer context
  double factor = 1.0;                 // how many times the original context
  int64_t original_max_seq_len = 0;    // the pretrained context (HF original_max_position_embeddings)
  double low_freq_factor = 1.0;        // llama3: wavelengths over original / this are divided by factor
  double high_freq_factor = 4.0;       // llama3: wavelengths under original / this keep their frequency
  double beta_fast = 32.0;             // yarn: dimensions turning more often than this in the original context are kept
  double beta_slow = 1.0;              // yarn: dimensions turning less often than this are interpolated
  double attention_factor = 0.0;       // yarn: 0 = 0.1 ln(factor) + 1

  bool scaled() const { return type != RopeType::standard; }
};

struct ModelConfig {
  std::string preset;             // name of configs/models/<preset>.yaml
  Family family = Family::llama;  // the HF architecture it was imported from and is exported as
  int64_t vocab_size = 0;         // tokens of the tokenizer (rows of the embedding and the head)
  int64_t hidden_size = 0;        // width of the residual stream
  int64_t intermediate_size = 0;  // width of the SwiGLU MLP
  int64_t num_layers = 0;         // decoder layers
  int64_t num_heads = 0;          // query heads
  int64_t num_kv_heads = 0;       // key/value heads (grouped-query attention: fewer than num_heads)
  int64_t head_dim = 0;           // width of one attention head; 0: hidden_size / num_heads
  int64_t max_seq_len = 4096;     // the context the model is for (HF max_position_embeddings)
  double rope_theta = 10000.0;    // RoPE base; raising it is ABF context extension
  RopeConfig rope;
  double rms_norm_eps = 1e-5;   // RMSNorm's epsilon
  bool attention_bias = false;  // q/k/v bias, as Qwen2
  bool qk_norm = false;         // RMSNorm over each head of q and k before RoPE, as Qwen3
  bool tie_embeddings = false;  // the head reuses the embedding table
  double init_std = 0.02;       // standard deviation of random initialisation (without init.from_hf)
  // auto: LibTorch's fused flash kernel where it fits, else blockwise
  AttentionKernel attention = AttentionKernel::automatic;
  int64_t attention_block = 512;  // block size of the blockwise kernel
  MoeConfig moe;

  int64_t resolved_head_dim() const { return head_dim > 0 ? head_dim : hidden_size / num_heads; }
  // Width of each expert's SwiGLU.
  int64_t expert_columns() const {
    return moe.expert_intermediate_size > 0 ? moe.expert_intermediate_size : intermediate_size;
  }
};

// The built-in synthetic corpus: filler text with a key hidden at a random
// depth, asked for at the end.
struct PasskeyConfig {
  int64_t min_doc_len = 256;      // shortest document in tokens (lengths are log-uniform)
  int64_t max_doc_len = 1024;     // longest document in tokens (at most data.seq_len)
  int64_t digits = 5;             // digits of the key
  int64_t filler_sentences = 16;  // size of the bank of repeated filler sentences
};

// Shorter sequences first: until `until_step`, train at `seq_len` tokens
// (tokens per step held constant), as long-context recipes grow the length.
struct CurriculumStage {
  int64_t until_step = 0;  // this stage's steps end before this (0-based) step
  int64_t seq_len = 0;     // tokens per sequence in this stage
};

// One dataset of a mixture; weights are shares of the training tokens.
struct MixtureEntry {
  std::string path;     // prefix of <path>.bin / <path>.idx
  double weight = 1.0;  // share of the training tokens (normalised over the mixture)
};

// Per-domain length upsampling (Fu et al. 2024): within each dataset, the
// documents of at least min_length tokens are drawn more often, until they
// carry `share` of its tokens; the datasets' shares stay as weighted.
struct LongUpsample {
  int64_t min_length = 0;  // documents at least this long are drawn more often; 0: off
  double share = 0.0;      // share of each dataset's tokens the long documents then carry
};

struct DataConfig {
  DataSourceKind source = DataSourceKind::passkey;  // passkey: the built-in corpus; indexed: Megatron .bin/.idx
  std::string path;                                 // indexed: prefix of <path>.bin / <path>.idx
  std::vector<MixtureEntry> mixture;                // indexed: several datasets instead of path
  LongUpsample upsample_long;
  int64_t seq_len = 2048;  // tokens per training sequence (after the curriculum)
  // split: documents continue in the next sequence; whole: pad instead;
  // adaptive: unpacked documents on sequence-parallel groups a planner sizes (parallel.adaptive)
  Packing packing = Packing::split;
  bool document_mask = true;       // no attention across packed documents
  bool reset_position_ids = true;  // positions restart at each document
  double eval_fraction = 0.01;     // indexed: share of documents held out for eval
  PasskeyConfig passkey;
  std::vector<CurriculumStage> curriculum;  // stages by until_step; seq_len afterwards

  // Sequence length of the (0-based) step.
  int64_t seq_len_at(int64_t step) const {
    for (const auto& stage : curriculum)
      if (step < stage.until_step) return stage.seq_len;
    return seq_len;
  }
};

struct TrainConfig {
  int64_t steps = 100;                   // optimizer steps
  int64_t global_batch_tokens = 0;       // tokens per optimizer step (accumulated); 0: one sequence
  int64_t micro_batch_size = 1;          // sequences per forward/backward (at most, on a dp rank)
  double lr = 3e-4;                      // peak learning rate
  double min_lr = 3e-5;                  // where the decay ends
  int64_t warmup_steps = 0;              // linear warm-up from 0 to lr
  Schedule schedule = Schedule::cosine;  // decay after warm-up (wsd: warmup-stable-decay)
  double decay_fraction = 0.2;           // wsd: share of steps spent decaying
  double weight_decay = 0.1;             // AdamW's decoupled decay (not on norms and biases)
  double beta1 = 0.9;                    // AdamW's decay rate of the gradient's running mean
  double beta2 = 0.95;                   // AdamW's decay rate of the squared gradient's running mean
  double eps = 1e-8;                     // AdamW's epsilon
  double grad_clip = 1.0;                // clip the gradients' global norm to this; 0: off
  int64_t max_skipped_steps = 3;         // steps in a row whose non-finite loss or gradients skip the update; then stop
  int64_t seed = 1234;                   // initialisation and data order
  DeviceKind device = DeviceKind::cpu;   // cuda: each rank on its local GPU
  int64_t threads = 0;                   // 0: cores / ranks on this node
  // fp32 | bf16 (bf16 compute, fp32 master weights, gradients and moments) |
  // auto: bf16 on CUDA; on a CPU bf16 where its measured products keep up
  // with fp32's (AMX, some AVX512-BF16), else fp32. Resolved at load.
  Precision precision = Precision::automatic;

  bool bf16() const { return precision == Precision::bf16; }
};

// Sequence parallelism: Ulysses (all-to-all over heads) inside, ring outside.
struct SequenceParallelConfig {
  int64_t ulysses = 1;  // all-to-all over heads (DeepSpeed-Ulysses)
  int64_t ring = 1;     // ring attention: K/V blocks passed around
  bool zigzag = true;   // ring rank r holds chunks r and 2R-1-r (equal causal work); false: contiguous
};

// data.packing: adaptive (FlexSP): each step, the ranks split into Ulysses
// groups of power-of-two sizes and every document of the step runs whole on
// one of them, the groups and the assignment chosen to finish the step
// soonest within each rank's activation memory.
struct AdaptiveSpConfig {
  // milp: mixed group sizes (GLPK, greedy fallback); uniform: the best one size per step
  SpPlanner planner = SpPlanner::milp;
  int64_t group = 0;         // > 0: every group of this size, a static layout (no planning)
  int64_t max_group = 0;     // 0: the largest power of two within the ranks and the heads
  double activation_gb = 0;  // activation memory per rank no group may exceed; 0: no limit
  double time_limit_s = 1;   // the solver's time per step (it plans the next step during this one)
  int64_t buckets = 8;       // document length buckets of the program
};

// Degrees of the 4D rank grid (docs/design.md: tp innermost, then ulysses, ring,
// dp, pp outermost) and how data-parallel gradients travel.
struct ParallelConfig {
  std::string dp = "auto";  // auto: the world / (tp * ulysses * ring * pp)
  int64_t tp = 1;           // tensor parallelism (Megatron's split of heads and MLP)
  bool tp_sequence = true;  // Megatron's sequence parallelism: norms and residual hold 1/tp of the tokens
  int64_t pp = 1;           // pipeline stages (1F1B)
  SequenceParallelConfig sp;
  AdaptiveSpConfig adaptive;  // data.packing: adaptive
  int64_t ep = 1;             // expert parallelism, carved from dp x sp
  // Model state sharded over the dp x sp replicas (parameter_state.h): 1 the
  // optimizer state, 2 also the gradients, 3 also the weights.
  int64_t zero = 0;
  double bucket_mb = 25;                     // gradient reduction bucket (MiB of gradients)
  bool overlap = true;                       // reduce buckets during backward as they fill
  WireDtype reduce_dtype = WireDtype::fp32;  // of gradient reductions: bf16 halves the traffic (with bf16 compute)
  double timeout_s = 600;                    // a collective unfinished this long is an error
  // CPU runs: every group's operations in NCCL's order (synchronous sends,
  // one queue per group), so orderings that hang over NCCL hang here too
  bool emulate_nccl = false;

  int64_t sp_degree() const { return sp.ulysses * sp.ring; }
  // These settings on one rank: every degree 1.
  ParallelConfig on_one_rank() const {
    ParallelConfig p = *this;
    p.dp = "auto";
    p.tp = p.pp = p.ep = p.sp.ulysses = p.sp.ring = 1;
    return p;
  }
  // Ranks one data-parallel replica spans.
  int64_t model_degree() const { return tp * sp_degree() * pp; }
};

// What long sequences run out of first: activations (offload/activations).
struct MemoryConfig {
  Recompute checkpoint = Recompute::none;  // what is recomputed in backward: whole layers (full), attention or mlp
  int64_t checkpoint_every = 1;            // only every k-th layer (0, k, 2k, ...)
  std::string mlp_tiles = "1";       // the MLP over sequence tiles, intermediates recomputed: N | auto (seq / hidden)
  std::string loss_tiles = "1";      // logits and loss over sequence tiles, never [seq, vocab] at once: N | auto
  bool offload_activations = false;  // checkpointed layers' inputs wait in host memory (CUDA; prefetched back)
  bool offload_model = false;        // layers' weights, gradients and AdamW state in host memory, in chunks
  double chunk_mb = 32;              // chunk size (whole layers, in execution order)
  int64_t n_persist = 0;             // chunks kept on the device for good (the first ones)
  int64_t n_buffer = 2;              // device buffers the other chunks take turns in
  bool overlap_update = true;        // each chunk's host AdamW runs as soon as backward is done with it
  double device_budget_gb = 0;       // device memory per rank; 0: no limit (manual: the chunks' share)
  // manual: the settings above; auto: a profile of the first step chooses
  // checkpoint/swap/keep per layer, n_persist and n_buffer under the budget.
  PlanMode plan = PlanMode::manual;
};

struct CheckpointConfig {
  std::string dir;              // empty: <run_dir>/checkpoints
  int64_t interval = 0;         // save every N steps; 0: only at the end
  std::string resume = "none";  // none, auto (the newest complete one in dir) or a checkpoint's path
  int64_t keep = 2;             // newest complete checkpoints of this run's lineage kept
  bool move_aside = false;  // a fresh run moves another run's checkpoints into <dir>/aside_<run>/ instead of refusing
  ExportDtype export_hf = ExportDtype::none;  // at the end, also the final weights in HF format
};

// Where the weights start from (without a checkpoint to resume).
struct InitConfig {
  std::string from_hf;  // a Hugging Face model directory: its config.json sets the model keys
};

struct LogConfig {
  int64_t interval = 10;     // the step line and metrics.jsonl record every N steps (and at the last)
  bool tensorboard = false;  // rank 0 also writes every metrics.jsonl figure to <run_dir>/tb/ for TensorBoard
};

struct EvalConfig {
  int64_t sequences = 16;                // held-out sequences for loss / perplexity
  bool at_end = true;                    // evaluate after training
  int64_t interval = 0;                  // also every N steps during training (0: only at the end)
  int64_t position_buckets = 4;          // held-out loss by position: equal ranges of data.seq_len
  int64_t passkey_samples = 32;          // passkey retrieval samples per length
  std::vector<int64_t> passkey_lengths;  // context lengths to retrieve at; empty: data.seq_len
  int64_t passkey_depths = 1;            // the key at D depths of the filler, samples spread over them; 1: random depth
};

// A Chrome/Perfetto trace (LibTorch's Kineto profiler, with longtrain's
// own spans) of steps start_step..end_step, 1-based, written by each rank
// listed to run_dir/trace/; start_step 0: none.
struct ProfileConfig {
  int64_t start_step = 0;            // first traced step; 0: no trace
  int64_t end_step = 0;              // last traced step; 0: start_step alone
  std::vector<int64_t> ranks = {0};  // the ranks that write a trace; empty: every rank

  bool enabled() const { return start_step > 0; }
  int64_t last_step() const { return end_step > 0 ? end_step : start_step; }
};

struct Config {
  std::string source_file;               // the recipe it came from
  std::string run_dir = "runs/default";  // where the run writes: config.yaml, logs, metrics, checkpoints
  ModelConfig model;
  InitConfig init;
  DataConfig data;
  TrainConfig train;
  CheckpointConfig checkpoint;
  LogConfig log;
  EvalConfig eval;
  ParallelConfig parallel;
  MemoryConfig memory;
  ProfileConfig profile;

  std::string checkpoint_dir() const { return checkpoint.dir.empty() ? run_dir + "/checkpoints" : checkpoint.dir; }
  int64_t sequences_per_step(int64_t step) const { return train.global_batch_tokens / data.seq_len_at(step); }
  // The pipeline runs every forward before the first backward (GPipe's
  // order): a global-batch balance loss needs every micro-batch's routing.
  bool all_forward_first() const { return model.moe.enabled() && model.moe.balance == BalanceScope::global_batch; }
};

// Loads a recipe, applies `key.path=value` overrides, resolves the model
// preset and validates everything. Throws lt::Error naming file, line, key.
Config load_config(const std::string& recipe_path, const std::vector<std::string>& overrides = {});

// The fully resolved config as YAML (every key, defaults included).
std::string to_yaml(const Config& config);

}  // namespace lt
