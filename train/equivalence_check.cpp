#include "train/equivalence_check.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <cstdio>

#include "core/data/document_source.h"
#include "core/data/packer.h"
#include "core/optim/lr_schedule.h"
#include "core/util/bf16_support.h"
#include "core/util/error.h"
#include "core/model/model_size.h"
#include "train/trainer.h"

namespace lt {
namespace {

// The plainest run of the same model, data and optimizer on one rank.
Config one_rank(Config c) {
  c.parallel = c.parallel.on_one_rank();
  c.parallel.dp = "1";
  c.parallel.zero = 0;
  c.parallel.reduce_dtype = WireDtype::fp32;
  MemoryConfig plain;
  c.memory = plain;
  return c;
}

// Per parameter, over the elements this rank owns: <g, r>, |g|^2, |r|^2,
// |g - r|^2 of the job's gradient g and the reference's r.
constexpr int kSums = 4;

at::Tensor owned_sums(Trainer& job, const std::map<std::string, at::Tensor>& reference,
                      const std::vector<std::string>& names) {
  auto sums = at::zeros({static_cast<int64_t>(names.size()), kSums}, at::kDouble);
  auto& model = job.model();
  for (const auto& s : job.segments()) {
    const auto grad = s.grad();
    if (!grad.defined()) continue;
    const auto slice = model.slice_of(s.name);
    const auto g = grad.detach().to(at::kCPU, at::kDouble).reshape(-1);
    const auto r = reference.at(s.name)
                       .narrow(slice.dim, slice.offset, s.shape[slice.dim])
                       .reshape(-1)
                       .narrow(0, s.start, s.size());
    const auto row = std::find(names.begin(), names.end(), s.name) - names.begin();
    sums[row] += at::stack({(g * r).sum(), g.pow(2).sum(), r.pow(2).sum(), (g - r).pow(2).sum()});
  }
  return sums;
}

CheckedStep compare(int64_t step, double loss, double reference_loss, const at::Tensor& sums,
                    const std::vector<std::string>& names, const Tolerance& t) {
  CheckedStep out;
  out.step = step, out.loss = loss, out.reference_loss = reference_loss;
  const auto* x = sums.data_ptr<double>();
  for (size_t i = 0; i < names.size(); ++i, x += kSums) {
    const double dot = x[0], gg = x[1], rr = x[2], diff = x[3];
    const double cosine = gg == 0 && rr == 0 ? 1 : dot / std::max(1e-300, std::sqrt(gg * rr));
    const double error = std::sqrt(diff / std::max(rr, 1e-300));
    const bool worse = t.cosine > 0 ? cosine < out.worst_cosine : error > out.worst_error;
    if (worse || out.worst_parameter.empty()) out.worst_parameter = names[i];
    out.worst_cosine = std::min(out.worst_cosine, cosine);
    out.worst_error = std::max(out.worst_error, error);
  }
  const double loss_error = std::abs(loss - reference_loss) / std::max(1e-300, std::abs(reference_loss));
  out.passed = std::isfinite(loss) && loss_error <= t.loss && (t.gradient <= 0 || out.worst_error <= t.gradient) &&
               (t.cosine <= 0 || out.worst_cosine >= t.cosine);
  return out;
}

}  // namespace

Tolerance Tolerance::for_precision(bool bf16) { return bf16 ? Tolerance{5e-3, 0, 0.999} : Tolerance{1e-5, 1e-5, 0}; }

bool CheckReport::passed() const {
  return !steps.empty() && std::all_of(steps.begin(), steps.end(), [](const CheckedStep& s) { return s.passed; });
}

void check_replayable(const Config& config) {
  if (config.data.packing == Packing::adaptive)
    fail(
        "check: data.packing: adaptive plans each step's groups from measured costs, so its steps cannot be "
        "replayed on one rank; check the recipe with data.packing=split");
}

CheckReport check_against_one_rank(const Config& config, Mesh& mesh, int64_t steps,
                                   const std::function<void(Trainer&)>& built) {
  check_replayable(config);
  CheckReport report;
  report.tolerance =
      Tolerance::for_precision(resolve_precision(config.train.precision, config.train.device) == Precision::bf16);
  Trainer job(config, &mesh);
  if (built) built(job);
  Config plain = one_rank(config);
  plain.train.threads = at::get_num_threads();  // the job's share of the cores, not all of them
  Trainer alone(plain);
  std::vector<std::string> names;
  for (const auto& item : alone.model().named_parameters()) names.push_back(item.key());
  report.parameters = static_cast<int64_t>(names.size());
  auto source = make_document_source(config.data, config.model.vocab_size, config.train.seed, Split::Train);
  Packer packer(*source, config.data);
  for (int64_t s = 0; s < steps; ++s) {
    const Batch batch = packer.next(config.sequences_per_step(s), config.data.seq_len_at(s));
    const double lr = learning_rate(config.train, s);
    double reference_loss = 0;
    std::map<std::string, at::Tensor> reference;
    alone.step(batch, s + 1, lr, [&](double loss) {
      reference_loss = loss;
      for (const auto& item : alone.model().named_parameters())
        reference[item.key()] = item.value().grad().detach().to(at::kCPU, at::kDouble);
    });
    at::Tensor sums;
    double loss = 0;
    job.step(batch, s + 1, lr, [&](double l) {
      loss = l;
      sums = owned_sums(job, reference, names);
    });
    mesh.group(Group::world).all_reduce(sums);
    report.steps.push_back(compare(s + 1, loss, reference_loss, sums, names, report.tolerance));
  }
  return report;
}

std::string describe(const CheckReport& r) {
  std::string out;
  char line[512];
  for (const auto& s : r.steps) {
    std::snprintf(line, sizeof(line),
                  "step %lld: loss %.6f, one rank %.6f (relative difference %.2e); worst gradient cosine %.8f, "
                  "worst relative error %.2e (%s)%s\n",
                  static_cast<long long>(s.step), s.loss, s.reference_loss,
                  std::abs(s.loss - s.reference_loss) / std::max(1e-300, std::abs(s.reference_loss)), s.worst_cosine,
                  s.worst_error, s.worst_parameter.c_str(), s.passed ? "" : "  <- beyond tolerance");
    out += line;
  }
  const auto& t = r.tolerance;
  std::snprintf(line, sizeof(line), "%s: %zu steps, %lld parameters; tolerance: loss %.0e relative, gradient %s %.4g\n",
                r.passed() ? "check passed" : "check FAILED", r.steps.size(), static_cast<long long>(r.parameters),
                t.loss, t.cosine > 0 ? "cosine >=" : "relative error <=", t.cosine > 0 ? t.cosine : t.gradient);
  return out + line;
}

double chunk_mb_holding(const Config& c, double layers) {
  const double element = c.train.bf16() ? 2 : 4;
  return layers * element * static_cast<double>(layer_parameters(c.model, 1, c.model.moe.experts)) / (1 << 20);
}

int64_t fewest_layers(const Config& c) {
  const auto& m = c.model;
  // Every stage a layer, the checkpointing and MoE pattern whole, two at least.
  int64_t layers = std::max<int64_t>({2, c.parallel.pp, c.memory.checkpoint_every, m.moe.enabled() ? m.moe.every : 1});
  if (m.moe.enabled() && m.moe.every > 1) layers = std::max(layers, 2 * m.moe.every);
  return std::min(layers, m.num_layers);
}

std::vector<std::string> scale_down(Config& c, int world) {
  std::vector<std::string> notes;
  auto& p = c.parallel;
  // Each kind of split the recipe uses at degree 2, the rarest first, while
  // the world holds them; the rest of the world is data parallel.
  int64_t left = world;
  auto keep = [&](int64_t& degree, const char* name) {
    if (degree <= 1) return;
    const int64_t was = degree;
    degree = left >= 2 ? 2 : 1;
    left /= degree;
    if (degree != was) notes.push_back(std::string(name) + " " + std::to_string(was) + " -> " + std::to_string(degree));
  };
  keep(p.pp, "pp");
  keep(p.tp, "tp");
  keep(p.sp.ring, "ring");
  keep(p.sp.ulysses, "ulysses");
  p.dp = "auto";
  const int64_t replicas = world / p.model_degree() * p.sp_degree();
  if (p.ep > 1) {
    const int64_t was = p.ep;
    p.ep = replicas >= 2 ? 2 : 1;
    notes.push_back("ep " + std::to_string(was) + " -> " + std::to_string(p.ep));
  }
  p.timeout_s = std::min(p.timeout_s, 120.0);
  auto& m = c.model;
  const int64_t groups = m.num_heads / m.num_kv_heads;  // grouped-query attention kept
  m.hidden_size = 64;
  m.num_heads = 8;
  m.num_kv_heads = std::max<int64_t>(1, 8 / std::min<int64_t>(8, groups));
  m.head_dim = 0;
  m.intermediate_size = 128;
  m.num_layers = std::max<int64_t>(4, 2 * fewest_layers(c));
  m.vocab_size = 256;
  if (m.moe.enabled()) {
    m.moe.experts = 4;
    m.moe.top_k = std::min<int64_t>(m.moe.top_k, 2);
    if (m.moe.expert_intermediate_size > 0) m.moe.expert_intermediate_size = 32;
    if (m.moe.shared_expert_intermediate_size > 0) m.moe.shared_expert_intermediate_size = 64;
    if (!m.moe.dense_layers.empty()) m.moe.dense_layers = {0};  // a dense layer still among the MoE ones
  }
  m.attention_block = 32;
  auto& d = c.data;
  if (d.packing == Packing::adaptive) {
    d.packing = Packing::split;
    notes.push_back(
        "data.packing adaptive -> split (adaptive groups are planned from measured costs each step, "
        "so the steps cannot be replayed on one rank; tests/mpi/adaptive_sp_test.cpp compares them)");
  }
  d.source = DataSourceKind::passkey;
  d.path.clear(), d.mixture.clear(), d.curriculum.clear();
  d.upsample_long = {};
  d.seq_len = 128;
  d.passkey.digits = 3;
  d.passkey.min_doc_len = 40;
  d.passkey.max_doc_len = 200;
  m.max_seq_len = std::max<int64_t>(m.max_seq_len, d.seq_len);
  if (m.rope.scaled()) m.rope.original_max_seq_len = std::min<int64_t>(m.rope.original_max_seq_len, 64);
  auto& t = c.train;
  const int64_t dp = world / p.model_degree();
  t.micro_batch_size = 1;
  t.global_batch_tokens = 2 * dp * d.seq_len;  // two micro-batches a replica: accumulation, the pipeline's 1F1B
  t.device = DeviceKind::cpu;
  t.precision = Precision::fp32;
  t.threads = 1;
  t.warmup_steps = 0;
  t.lr = 1e-3;
  t.eps = 1e-6;  // Adam's step where a gradient is ~0 amplifies summation order: see tests' tiny_run
  c.init.from_hf.clear();
  c.memory.device_budget_gb = 0;
  c.memory.plan = PlanMode::manual;
  if (c.memory.offload_model) c.memory.chunk_mb = chunk_mb_holding(c, 2.5);  // whatever the recipe's chunk held
  notes.push_back("model " + std::to_string(m.num_layers) +
                  " layers of hidden 64, 128 tokens a sequence, fp32 on CPU, passkey data, random weights");
  return notes;
}

}  // namespace lt
