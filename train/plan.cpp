#include "train/plan.h"

#include <algorithm>
#include <sstream>

#include "core/model/model_size.h"
#include "core/util/error.h"
#include "core/util/logger.h"
#include "offload/activations/tiling.h"
#include "offload/profiler/planner.h"
#include "parallel/pipeline/schedule.h"
#include "parallel/pipeline/stages.h"
#include "parallel/sequence/ring_attention.h"
#include "parallel/sequence/sequence_parallel.h"
#include "parallel/sequence/ulysses_attention.h"
#include "parallel/tensor_parallel/tensor_parallel.h"

namespace lt {
namespace {

// Bytes of an element in the compute dtype: activations, the weights'
// compute copies, offloaded chunks' device copies and their gradients.
int64_t compute_bytes(const Config& config) { return config.train.bf16() ? 2 : 4; }

// Activation elements one layer keeps for backward, per token of a rank,
// with our kernels (flash/blockwise attention keep no seq x seq matrix):
// around the tp regions the norms' inputs and the residual (split over tp
// with its sequence parallelism; the first is the layer's input); inside
// attention its gathered input, q/k/v before and after RoPE, the output and
// its log-sum-exp; the MLP's gathered input, and its gate, up, activation
// and product.
struct LayerActivations {
  int64_t input, around, attention, mlp_input, mlp_inner;
};

// Per token inside the MLP: a dense one keeps gate, up, activation and
// product; an MoE one keeps those for each of its top_k selections with the
// selection's dispatched input and weighted output (dropless: capacity only
// lowers it), the router's logits and probabilities, and the shared expert.
int64_t mlp_activations(const ModelConfig& m, int tp, int64_t layer) {
  if (!m.moe.is_moe_layer(layer)) return 4 * m.intermediate_size / tp;
  const auto& e = m.moe;
  const int64_t columns = m.expert_columns();
  const int64_t shared = e.shared_expert_intermediate_size > 0 ? 4 * e.shared_expert_intermediate_size + 1 : 0;
  return e.top_k * (2 * m.hidden_size + 4 * columns) + 2 * e.experts + shared;
}

LayerActivations layer_activations(const ModelConfig& m, int tp, bool tp_sequence, int64_t layer) {
  const int64_t h = m.hidden_size, d = m.resolved_head_dim();
  const int64_t q = m.num_heads * d / tp, kv = std::max<int64_t>(1, m.num_kv_heads / tp) * d;
  const int64_t input = tp_sequence ? h / tp : h;
  return {input, 3 * input, h + 2 * (q + 2 * kv) + q + m.num_heads / tp, h, mlp_activations(m, tp, layer)};
}

// Elements per token a layer keeps under the memory settings, and those
// that exist only while it is recomputed in backward.
std::pair<int64_t, int64_t> kept_per_token(const LayerActivations& a, const MemoryConfig& memory, bool checkpointed) {
  const int64_t mlp_inner = memory.mlp_tiles != "1" ? 0 : a.mlp_inner;  // tiles recompute theirs
  const int64_t all = a.around + a.attention + a.mlp_input + mlp_inner;
  if (!checkpointed) return {all, 0};
  if (memory.checkpoint == Recompute::full) return {a.input, all};
  if (memory.checkpoint == Recompute::attention) return {all - a.attention, a.attention};
  return {all - mlp_inner, mlp_inner};  // mlp
}

// Micro-batches per step on one dp rank, at data.seq_len (the length the
// plan describes; a curriculum's shorter stages have more of them).
int64_t micro_batches(const Config& config, const Degrees& d) {
  return config.train.global_batch_tokens / config.data.seq_len / d.dp / config.train.micro_batch_size;
}

// The loss's working set for one loss tile, fp32, vocab split by tp: the
// logits, their log-softmax and both gradients (as measured by the
// profiler at the loss's peak).
int64_t logits_bytes(const Config& config, const Degrees& d, int64_t tokens) {
  const auto& m = config.model;
  const int64_t tiles = tile_count(config.memory.loss_tiles, config.data.seq_len / (d.ulysses * d.ring), m.hidden_size);
  return 4 * tokens / tiles * m.vocab_size / d.tp * 4;
}

// Whole layers of `layer_parameters` parameters per chunk_mb chunk, held
// on the device in the compute dtype.
int64_t layers_per_chunk(const Config& config, int64_t layer_parameters) {
  return std::max<int64_t>(
      1, static_cast<int64_t>(config.memory.chunk_mb * (1 << 20)) / (compute_bytes(config) * layer_parameters));
}

std::string row(const std::vector<std::string>& cells, const std::vector<int>& widths) {
  std::string out;
  for (size_t i = 0; i < cells.size(); ++i) {
    std::string cell = cells[i];
    cell.resize(std::max<size_t>(cell.size(), widths[i]), ' ');
    out += cell + (i + 1 < cells.size() ? "  " : "");
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out + "\n";
}

std::string ranks_text(const std::vector<int>& ranks) {
  std::string out = "[";
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (i) out += ' ';
    out += std::to_string(ranks[i]);
  }
  return out + "]";
}

// How a sequence is cut and what each rank's forward sends per layer.
std::string describe_sequence_split(const Config& config, const Degrees& d) {
  const auto& m = config.model;
  const SequenceLayout layout = sequence_layout(config.parallel);
  const int64_t seq = config.data.seq_len, padded = padded_length(seq, layout);
  const int64_t local = padded / (d.ulysses * d.ring);
  const int64_t b = config.train.micro_batch_size, element = compute_bytes(config);
  const int64_t heads = m.num_heads / d.tp, kv_heads = std::max<int64_t>(1, m.num_kv_heads / d.tp);
  const int64_t hd = m.resolved_head_dim();
  const int64_t a2a = d.ulysses > 1 ? ulysses_forward_bytes(b, local, heads, kv_heads, hd, d.ulysses, element) : 0;
  // The ring runs inside Ulysses: on its tokens, with its share of the
  // (replicated, when fewer than the ranks) kv heads.
  const int64_t ring_kv_heads = kv_heads % d.ulysses == 0 ? kv_heads / d.ulysses : 1;
  const int64_t ring = d.ring > 1 ? ring_forward_bytes(b, local * d.ulysses, ring_kv_heads, hd, d.ring, element,
                                                       config.data.document_mask)
                                  : 0;
  std::ostringstream out;
  out << "sequence: ulysses " << d.ulysses << " x ring " << d.ring
      << (d.ring > 1 ? (layout.zigzag ? " (zigzag)" : " (contiguous)") : "") << ": " << local << " tokens per rank of "
      << padded << (padded != seq ? " (padded from " + std::to_string(seq) + ")" : "")
      << "; per layer and micro-batch each rank's forward sends " << human_bytes(static_cast<double>(a2a))
      << " (Ulysses all-to-all) + " << human_bytes(static_cast<double>(ring)) << " (ring K/V)";
  return out.str();
}

// What tensor and pipeline parallelism cost: tp's traffic per layer, the
// pipeline's micro-batches and its idle fraction.
std::string describe_model_split(const Config& config, const Degrees& d) {
  std::ostringstream out;
  const int64_t element = compute_bytes(config), b = config.train.micro_batch_size;
  if (d.tp > 1) {
    const int64_t tokens = config.data.seq_len / (d.ulysses * d.ring);
    out << "\ntensor: tp " << d.tp << (config.parallel.tp_sequence ? " with" : " without")
        << " sequence split; per layer and micro-batch each rank's forward sends "
        << human_bytes(static_cast<double>(tp_forward_bytes(b, tokens, config.model.hidden_size, d.tp, element)))
        << (config.parallel.tp_sequence ? " (2 all-gathers + 2 reduce-scatters" : " (2 all-reduces") << " of [" << b
        << ", " << tokens << ", " << config.model.hidden_size << "])";
  }
  if (d.pp > 1) {
    const int64_t micro = micro_batches(config, d);
    const std::string bubble = formatted("%.1f%%", 100 * bubble_fraction(d.pp, static_cast<int>(micro)));
    out << "\npipeline: pp " << d.pp << ", " << (config.all_forward_first() ? "all forwards first (GPipe)" : "1F1B")
        << " over " << micro << " micro-batches per step: idle (p-1)/(m+p-1) = " << bubble;
  }
  return out.str();
}

// What memory.plan: auto would choose on each stage (estimated_profile).
struct AssumedMachine {
  double flops, link;
  const char* text;
};

AssumedMachine assumed_machine(const Config& config) {
  if (config.train.device == DeviceKind::cuda) return {400e12, 25e9, "400 TFLOP/s and a 25 GB/s host link"};
  return {100e9, 10e9, "100 GFLOP/s and a 10 GB/s copy rate"};
}

Profile stage_profile(const Config& config, const Degrees& d, const StagePlan& st, int stage) {
  const auto& m = config.model;
  const auto machine = assumed_machine(config);
  const int64_t bytes = compute_bytes(config);
  const int64_t seq = config.data.seq_len, tokens = config.train.micro_batch_size * seq / (d.ulysses * d.ring);
  const int64_t out = layer_activations(m, d.tp, config.parallel.tp_sequence, st.first_layer).input * tokens * bytes;
  // Per token, forward: 2 FLOPs per weight, causal attention 2 h seq / tp.
  const double active = layer_parameters(m, d.tp, m.moe.top_k);  // a token's parameters in a layer
  const double forward = tokens * (2.0 * active + 2.0 * m.hidden_size * seq / d.tp) / machine.flops;
  // Backward of a layer begins with the outputs before it and the incoming
  // gradient; on top come its recomputation and the MLP's gradients of gate
  // and up (one tile of them, half of what the MLP keeps), the largest in
  // its backward.
  const int64_t mlp_tiles = tile_count(config.memory.mlp_tiles, seq / (d.ulysses * d.ring), m.hidden_size);
  Profile p;
  p.base = out + 2 * tokens * m.resolved_head_dim() * bytes;  // the embeddings and RoPE's cos and sin
  for (int64_t l = st.first_layer; l < st.first_layer + st.layers; ++l) {
    const auto a = layer_activations(m, d.tp, config.parallel.tp_sequence, l);
    const int64_t kept = kept_per_token(a, config.memory, false).first * tokens * bytes;
    const int64_t mlp_gradients = a.mlp_inner / 2 * tokens / mlp_tiles * bytes;
    const int64_t i = l - st.first_layer;
    p.blocks.push_back(
        {l, forward, forward, 2 * forward, out, out, kept, p.base + (i + 1) * out, kept + mlp_gradients});
  }
  p.head_peak = p.base + st.layers * out + (st.head ? logits_bytes(config, d, tokens) : 0);
  p.micro_batches = static_cast<int>(std::max<int64_t>(1, micro_batches(config, d)));
  p.in_flight = in_flight(stage, d.pp, p.micro_batches, config.all_forward_first());
  p.state = st.weights + st.gradients + st.optimizer - st.chunks;  // the planner adds the chunks it keeps
  if (config.memory.offload_model) {
    const int64_t per_layer = layer_parameters(m, d.tp, m.moe.experts / d.ep);
    const int64_t per_chunk = layers_per_chunk(config, per_layer);
    for (int64_t l = 0; l < st.layers; l += per_chunk)
      p.chunks.push_back(std::min(per_chunk, st.layers - l) * per_layer * compute_bytes(config));
    for (int64_t l = 0; l < st.layers; ++l) p.chunk_of_block.push_back(l / per_chunk);
  }
  p.link_bytes_per_s = machine.link;
  p.overlap_swaps = p.swap_frees_device = config.train.device == DeviceKind::cuda;
  return p;
}

std::string describe_auto_plan(const Config& config, const Degrees& d, const std::vector<StagePlan>& stages) {
  const auto budget = static_cast<int64_t>(config.memory.device_budget_gb * (int64_t{1} << 30));
  std::ostringstream out;
  out << "memory plan (auto, budget " << human_bytes(static_cast<double>(budget)) << " per rank, in place of the "
      << "manual settings of the table; assuming " << assumed_machine(config).text
      << ", optimizer excluded; training profiles its own):\n";
  for (size_t s = 0; s < stages.size(); ++s) {
    const Profile profile = stage_profile(config, d, stages[s], static_cast<int>(s));
    out << "  stage " << s << ": ";
    try {
      out << describe(choose_plan(profile, budget), static_cast<int64_t>(profile.chunks.size())) << "\n";
    } catch (const Error& e) {
      out << e.what() << "\n";
    }
  }
  return out.str();
}

}  // namespace

std::vector<StagePlan> plan_stages(const Config& config, const Degrees& degrees) {
  const auto& m = config.model;
  // fp32: 4-byte weights, gradients and activations. bf16: the fp32 master
  // weights with their bf16 compute copies (4 + 2), fp32 gradients, bf16
  // activations. Both: the fp32 moments (8). ZeRO shards each parameter's
  // state over the ranks replicating it (dp x sp, and for experts the ep_dp
  // ranks holding the same ones): level 1 the moments, 2 also the
  // gradients, 3 also the weights, whose compute copies are then gathered
  // for the layers that run (parameter_state.h).
  const int64_t compute = compute_bytes(config);
  const int64_t weight_bytes = config.train.bf16() ? 4 + 2 : 4;
  const int64_t optimizer_bytes = 8;
  const int64_t zero = config.parallel.zero;
  const int64_t replicas = static_cast<int64_t>(degrees.dp) * degrees.ulysses * degrees.ring;
  const int64_t zero_replicas = zero >= 1 ? replicas : 1;
  // Elements of a stage's state a rank holds, of `dense` and `experts`
  // ones, where ZeRO shards it from `level` on.
  auto held = [&](int64_t level, int64_t dense, int64_t experts) {
    return zero >= level ? dense / replicas + experts / (replicas / degrees.ep) : dense + experts;
  };
  const int64_t seq = config.data.seq_len;
  const int64_t tokens = config.train.micro_batch_size * seq / (degrees.ulysses * degrees.ring);
  const auto& memory = config.memory;
  const auto split = split_stages(m, seq, degrees.pp);
  std::vector<StagePlan> stages(degrees.pp);
  for (int s = 0; s < degrees.pp; ++s) {
    auto& st = stages[s];
    st.first_layer = split[s].first;
    st.layers = split[s].count;
    st.embedding = s == 0;
    st.head = s == degrees.pp - 1;
    const int64_t vocab_slice = m.vocab_size * m.hidden_size / degrees.tp;
    const int64_t per_layer = layer_parameters(m, degrees.tp, m.moe.experts / degrees.ep);
    st.parameters = st.layers * per_layer + (st.embedding ? vocab_slice : 0) +
                    (st.head ? m.hidden_size + (m.tie_embeddings && degrees.pp == 1 ? 0 : vocab_slice) : 0);
    // With the model state offloaded, the layers' weights and gradients on
    // the device are those of the resident chunks (in the compute dtype, as
    // the chunk manager holds them), their optimizer state is on the host.
    int64_t resident = st.layers;
    if (memory.offload_model) {
      const int64_t per_chunk = layers_per_chunk(config, per_layer);
      const int64_t chunks = (st.layers + per_chunk - 1) / per_chunk;
      const int64_t held = std::min(chunks, memory.n_persist) + (chunks > memory.n_persist ? memory.n_buffer : 0);
      resident = std::min(st.layers, held * per_chunk);
      // fp32 weights and gradients, whole or with ZeRO-2/3 split over the
      // replicas; the moments split by ZeRO-1, and so the copies an
      // overlapped update keeps in case clipping undoes it.
      const int64_t undo = memory.overlap_update && config.train.grad_clip > 0 ? 12 : 0;
      const int64_t host_replicas = zero >= 2 ? replicas : 1;
      st.host = st.layers * per_layer * (4 + 4) / host_replicas + st.layers * per_layer * (8 + undo) / zero_replicas;
      st.chunks = resident * per_layer * 2 * compute;
    }
    // The replica sets' state: every parameter's, or with the layers in
    // chunks the weights outside layers (embedding, final norm, head).
    const int64_t others = st.parameters - st.layers * per_layer;
    const int64_t experts = memory.offload_model ? 0 : st.layers * layer_expert_parameters(m, degrees.ep);
    const int64_t dense = (memory.offload_model ? others : st.parameters) - experts;
    const int64_t chunked = memory.offload_model ? resident * per_layer * compute : 0;
    // ZeRO-3 gathers the weights outside layers for a step and the running
    // layer and the next (recomputed layers) or every layer (kept ones, held
    // by autograd until backward; under adaptive packing gathered for the
    // step); chunked layers are the chunks' to bring.
    const bool two_layers = memory.checkpoint == Recompute::full && memory.checkpoint_every == 1 &&
                            config.data.packing != Packing::adaptive;
    const int64_t layers_held =
        memory.offload_model ? 0 : std::min<int64_t>(st.layers, two_layers ? 2 : st.layers) * per_layer;
    // The embedding table is gathered in fp32 (the model reads it so); on
    // one rank an fp32 gather is the master itself.
    const int64_t fp32_table = st.embedding || (st.head && m.tie_embeddings) ? vocab_slice : 0;
    const int64_t gathered = replicas > 1  ? (others + layers_held) * compute + fp32_table * (4 - compute)
                             : compute < 4 ? (others - fp32_table + layers_held) * compute
                                           : 0;
    st.weights = (zero >= 3 ? held(3, dense, experts) * 4 + gathered : (dense + experts) * weight_bytes) + chunked;
    // (ZeRO-1 also keeps the shard its reduce-scatter receives.)
    st.gradients =
        held(2, dense, experts) * 4 + (zero == 1 && replicas > 1 ? held(1, dense, experts) * 4 : 0) + chunked;
    st.optimizer = held(1, dense, experts) * optimizer_bytes;
    // The schedule keeps `held` micro-batches in flight on stage s (1F1B:
    // up to stages - s); the last stage also holds the logits and their
    // gradient (vocab split by tp).
    const int64_t held =
        in_flight(s, degrees.pp, static_cast<int>(micro_batches(config, degrees)), config.all_forward_first());
    int64_t kept = 0, swapped = 0, recompute = 0;
    for (int64_t l = st.first_layer; l < st.first_layer + st.layers; ++l) {
      const bool checkpointed = memory.checkpoint != Recompute::none && l % memory.checkpoint_every == 0;
      const auto layer = layer_activations(m, degrees.tp, config.parallel.tp_sequence, l);
      const auto [keeps, needs] = kept_per_token(layer, memory, checkpointed);
      // With offload_activations a recomputed layer's input waits in host
      // memory until its recomputation.
      (checkpointed && memory.checkpoint == Recompute::full && memory.offload_activations ? swapped : kept) += keeps;
      recompute = std::max(recompute, needs);
    }
    const int64_t logits = st.head ? logits_bytes(config, degrees, tokens) : 0;
    const int64_t micro_batches_held = std::max<int64_t>(1, held);
    st.activations = (micro_batches_held * kept + recompute) * tokens * compute + logits;
    st.host_activations = micro_batches_held * swapped * tokens * compute;
  }
  return stages;
}

Profile estimated_profile(const Config& config, const Degrees& degrees, int stage) {
  return stage_profile(config, degrees, plan_stages(config, degrees)[stage], stage);
}

std::string describe_plan(const Config& config, int world, int ranks_per_node) {
  const Degrees d = resolve_degrees(config, world);
  const Layout layout(d);
  std::ostringstream out;
  out << "plan: " << config.source_file << " on " << world << " ranks (" << ranks_per_node << " per node, "
      << (world + ranks_per_node - 1) / ranks_per_node << " nodes)\n";
  out << "layout: tp " << d.tp << " x ulysses " << d.ulysses << " x ring " << d.ring << " x dp " << d.dp << " x pp "
      << d.pp << " (tp innermost, pp outermost); ep " << d.ep << " from dp x sp; zero " << config.parallel.zero
      << "\n\n";
  const std::vector<int> widths = {5, 5, 3, 8, 5, 3, 3, 3};
  out << row({"rank", "node", "tp", "ulysses", "ring", "dp", "pp", "ep"}, widths);
  for (int r = 0; r < world; ++r) {
    const Coord c = layout.coord(r);
    const auto ep = layout.group(Group::ep, r);
    const auto ep_rank = std::find(ep.begin(), ep.end(), r) - ep.begin();
    out << row({std::to_string(r), std::to_string(r / ranks_per_node), std::to_string(c.tp), std::to_string(c.ulysses),
                std::to_string(c.ring), std::to_string(c.dp), std::to_string(c.pp), std::to_string(ep_rank)},
               widths);
  }
  out << "\ngroups of rank 0:";
  for (Group g : kAllGroups) out << " " << group_name(g) << " " << ranks_text(layout.group(g, 0));
  if (d.ulysses * d.ring > 1) out << "\n\n" << describe_sequence_split(config, d);
  if (d.tp * d.pp > 1) out << "\n" << describe_model_split(config, d);
  out << "\n\nper rank, at seq_len " << config.data.seq_len << ", micro-batch " << config.train.micro_batch_size << " ("
      << (config.train.bf16() ? "bf16 compute: fp32 master weights + bf16 copies, fp32 grads and moments" : "fp32")
      << "):\n";
  const std::vector<int> stage_widths = {5, 9, 10, 10, 10, 10, 11, 10};
  out << row({"stage", "layers", "params", "weights", "grads", "optimizer", "activations", "total"}, stage_widths);
  const auto stages = plan_stages(config, d);
  for (size_t s = 0; s < stages.size(); ++s) {
    const auto& st = stages[s];
    out << row(
        {std::to_string(s), std::to_string(st.first_layer) + "-" + std::to_string(st.first_layer + st.layers - 1),
         human_count(static_cast<double>(st.parameters)), human_bytes(st.weights), human_bytes(st.gradients),
         human_bytes(st.optimizer), human_bytes(st.activations), human_bytes(st.total())},
        stage_widths);
  }
  const auto& memory = config.memory;
  if (memory.offload_model) {
    out << "model state offload: the layers' weights, gradients and AdamW state in host memory (";
    for (size_t s = 0; s < stages.size(); ++s) out << (s ? ", " : "") << human_bytes(stages[s].host);
    out << " per rank by stage); on the device " << memory.n_persist << " persistent chunks and " << memory.n_buffer
        << " buffers of " << memory.chunk_mb << " MiB or a layer\n";
  }
  if (memory.offload_activations && memory.checkpoint == Recompute::full) {
    out << "activation offload: the recomputed layers' inputs in host memory (";
    for (size_t s = 0; s < stages.size(); ++s) out << (s ? ", " : "") << human_bytes(stages[s].host_activations);
    out << " per rank by stage)\n";
  }
  if (memory.plan == PlanMode::automatic) {
    out << describe_auto_plan(config, d, stages);
    return out.str();
  }
  out << "activations: what each layer keeps for backward with flash attention; checkpoint " << name(memory.checkpoint)
      << (memory.checkpoint != Recompute::none && memory.checkpoint_every > 1
              ? " (every " + std::to_string(memory.checkpoint_every) + " layers)"
              : "")
      << ", mlp tiles " << memory.mlp_tiles << ", loss tiles " << memory.loss_tiles << "\n";
  return out.str();
}

}  // namespace lt
