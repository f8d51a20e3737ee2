#include "tests/support/reference.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/data/document_source.h"
#include "core/util/error.h"
#include "core/data/packer.h"
#include "parallel/mesh/mesh.h"

namespace lt::testing {

std::pair<at::Tensor, at::Tensor> naive_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                  const at::Tensor& visible) {
  auto qt = q.transpose(1, 2), kt = k.transpose(1, 2), vt = v.transpose(1, 2);
  auto scores = at::matmul(qt, kt.transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(3)));
  scores = scores.masked_fill(visible.unsqueeze(1).logical_not(), -INFINITY);
  auto lse = at::logsumexp(scores, -1);
  auto probs = at::softmax(scores, -1).nan_to_num(0.0);  // rows with no visible key
  return {at::matmul(probs, vt).transpose(1, 2), lse};
}

at::Tensor visibility(const at::Tensor& q_index, const at::Tensor& k_index, const at::Tensor& q_doc,
                      const at::Tensor& k_doc) {
  auto causal = k_index.unsqueeze(0).le(q_index.unsqueeze(1)).unsqueeze(0);
  if (!q_doc.defined()) return causal;
  return causal.logical_and(q_doc.unsqueeze(2).eq(k_doc.unsqueeze(1)));
}

namespace {

at::Tensor rms(const at::Tensor& x, const at::Tensor& w, double eps) {
  return w * (x / at::sqrt(x.pow(2).mean(-1, true) + eps));
}

// Rotation written as complex-plane pairs (i, i + d/2), straight from the RoPE paper in HF's layout.
at::Tensor rope(const at::Tensor& x, const at::Tensor& positions, double theta) {
  const int64_t d = x.size(-1), half = d / 2;
  auto i = at::arange(half, at::kDouble);
  auto angle = positions.to(at::kDouble).unsqueeze(-1) * at::pow(theta, -2.0 * i / d);  // [b, s, half]
  auto c = angle.cos().to(at::kFloat).unsqueeze(2), s = angle.sin().to(at::kFloat).unsqueeze(2);
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return at::cat({x1 * c - x2 * s, x2 * c + x1 * s}, -1);
}

}  // namespace

at::Tensor naive_llama_logits(const ModelConfig& c, const std::map<std::string, at::Tensor>& w,
                              const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& documents) {
  const int64_t b = tokens.size(0), s = tokens.size(1), d = c.resolved_head_dim();
  auto W = [&](const std::string& name) { return w.at(name); };
  auto h = W("model.embed_tokens.weight").index_select(0, tokens.reshape(-1)).view({b, s, -1});
  auto index = at::arange(s, at::kLong);
  auto visible = visibility(index, index, documents, documents);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto x = rms(h, W(p + "input_layernorm.weight"), c.rms_norm_eps);
    auto proj = [&](const std::string& name, int64_t heads) {
      auto y = at::matmul(x, W(p + "self_attn." + name + ".weight").t());
      if (c.attention_bias) y = y + W(p + "self_attn." + name + ".bias");
      y = y.view({b, s, heads, d});
      if (c.qk_norm && name != "v_proj")
        y = rms(y, W(p + "self_attn." + name.substr(0, 1) + "_norm.weight"), c.rms_norm_eps);
      return y;
    };
    auto q = rope(proj("q_proj", c.num_heads), positions, c.rope_theta);
    auto k = rope(proj("k_proj", c.num_kv_heads), positions, c.rope_theta);
    auto v = proj("v_proj", c.num_kv_heads);
    const int64_t group = c.num_heads / c.num_kv_heads;
    k = k.repeat_interleave(group, 2);
    v = v.repeat_interleave(group, 2);
    auto attn = naive_attention(q, k, v, visible).first.reshape({b, s, -1});
    h = h + at::matmul(attn, W(p + "self_attn.o_proj.weight").t());
    auto y = rms(h, W(p + "post_attention_layernorm.weight"), c.rms_norm_eps);
    auto gate = at::matmul(y, W(p + "mlp.gate_proj.weight").t());
    auto up = at::matmul(y, W(p + "mlp.up_proj.weight").t());
    h = h + at::matmul(gate * at::sigmoid(gate) * up, W(p + "mlp.down_proj.weight").t());
  }
  h = rms(h, W("model.norm.weight"), c.rms_norm_eps);
  auto head = c.tie_embeddings ? W("model.embed_tokens.weight") : W("lm_head.weight");
  return at::matmul(h, head.t());
}

bool has_cuda() { return at::hasCUDA() && at::getNumGPUs() > 0; }

double relative_error(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).norm().item<double>() / std::max(b.norm().item<double>(), 1e-30);
}

double cosine(const at::Tensor& a, const at::Tensor& b) {
  auto x = a.to(at::kDouble).flatten(), y = b.to(at::kDouble).flatten();
  const double norms = x.norm().item<double>() * y.norm().item<double>();
  return norms == 0 ? (x.norm().item<double>() == y.norm().item<double>() ? 1.0 : 0.0)
                    : x.dot(y).item<double>() / norms;
}

Agreement agreement(const std::string& precision) {
  if (precision == "bf16") return {5e-3, 0, 0.999};
  return {1e-5, 1e-5, 0};
}

::testing::AssertionResult losses_agree(double got, double expected, const Agreement& a) {
  if (std::abs(got - expected) <= a.loss * std::abs(expected)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "loss " << got << " vs " << expected << ": relative difference "
                                       << std::abs(got - expected) / std::abs(expected) << " > " << a.loss;
}

::testing::AssertionResult gradients_agree(const at::Tensor& got, const at::Tensor& expected, const Agreement& a) {
  if (a.gradient > 0) {
    const double error = relative_error(got, expected);
    if (error >= a.gradient) return ::testing::AssertionFailure() << "relative error " << error << " >= " << a.gradient;
  }
  if (a.cosine > 0) {
    const double similarity = cosine(got, expected);
    if (similarity < a.cosine)
      return ::testing::AssertionFailure() << "cosine similarity " << similarity << " < " << a.cosine;
  }
  return ::testing::AssertionSuccess();
}

ModelShard precision_shard(const std::string& precision) {
  ModelShard shard;
  if (precision == "bf16") shard.compute = std::make_shared<ComputeWeights>(at::kBFloat16);
  return shard;
}

ModelConfig tiny_model(bool tied, bool bias) {
  ModelConfig c;
  c.vocab_size = 96;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.rope_theta = 10000;
  c.tie_embeddings = tied;
  c.attention_bias = bias;
  if (bias) c.family = Family::qwen2;
  c.init_std = 0.1;
  c.attention_block = 16;
  return c;
}

std::string scratch_dir(const std::string& suite, const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("lt_" + suite + "_" + std::to_string(::getpid())) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string shared_scratch_dir(Communicator& job, const std::string& suite, const std::string& name) {
  return job.all_gather(job.rank() == 0 ? scratch_dir(suite, name) : std::string())[0];
}

int world_size() {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  return world;
}

void ensure_mpi() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) static MpiSession session;  // finalized at exit
}

Batch first_batch(const Config& c, uint64_t seed) {
  auto source = make_document_source(c.data, c.model.vocab_size, seed, Split::Train);
  Packer packer(*source, c.data);
  return packer.next(c.sequences_per_step(0), c.data.seq_len);
}

Config tiny_run(const std::string& run_dir, int64_t steps) {
  ensure_mpi();
  Config c;
  c.run_dir = run_dir;
  c.model = tiny_model();
  c.data.seq_len = 64;
  c.data.passkey.min_doc_len = 40;
  c.data.passkey.max_doc_len = 90;
  c.data.passkey.digits = 3;
  c.train.steps = steps;
  c.train.global_batch_tokens = 4 * 64;
  c.train.lr = 1e-2;
  // Adam's update lr * m / (sqrt(v) + eps) jumps where a gradient is ~0: a
  // larger eps keeps runs that differ only in summation order comparable.
  c.train.eps = 1e-6;
  c.train.threads = 1;
  c.train.precision = Precision::fp32;
  c.log.interval = 1;
  c.eval.at_end = false;
  return c;
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

void expect_error(const std::function<void()>& body, const std::vector<std::string>& fragments) {
  try {
    body();
    ADD_FAILURE() << "no error; expected one with '" << fragments.front() << "'";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const auto& fragment : fragments) EXPECT_NE(message.find(fragment), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    EXPECT_LT(message.size(), 1000u) << message.substr(0, 1000);
  }
}

FreshProcessState::FreshProcessState() : threads_(at::get_num_threads()) {}

void FreshProcessState::OnTestStart(const ::testing::TestInfo&) {
  at::manual_seed(c10::default_rng_seed_val);
  at::set_num_threads(threads_);
}

}  // namespace lt::testing
