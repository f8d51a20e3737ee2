#include "train/evaluate.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "core/data/packer.h"
#include "core/data/passkey_corpus.h"
#include "core/model/loss.h"
#include "core/util/logger.h"

namespace lt {
namespace {

std::string percent(double fraction) { return formatted("%.1f%%", 100 * fraction); }

// Depth d of D: the key at the middle of the d-th of D equal ranges.
double depth_of(int64_t bucket, int64_t depths) { return depths == 1 ? -1.0 : (bucket + 0.5) / depths; }

std::vector<int64_t> passkey_lengths(const Config& config) {
  return config.eval.passkey_lengths.empty() ? std::vector<int64_t>{config.data.seq_len} : config.eval.passkey_lengths;
}

std::string loss_lines(const LossResult& r, int64_t seq_len) {
  std::string out = "eval: loss " + formatted("%.4f", r.loss) + " | perplexity " + formatted("%.2f", r.perplexity) +
                    " over " + std::to_string(r.tokens) + " tokens";
  if (r.by_position.size() < 2) return out;
  out += "\neval: loss by position:";
  const auto buckets = static_cast<int64_t>(r.by_position.size());
  for (int64_t b = 0; b < buckets; ++b)
    out += (b ? " |" : "") + std::string(" ") + std::to_string(b * seq_len / buckets) + "-" +
           std::to_string((b + 1) * seq_len / buckets) + " " +
           (std::isnan(r.by_position[b]) ? std::string("-") : formatted("%.4f", r.by_position[b]));
  return out;
}

}  // namespace

Scorer whole_model_scorer(LlamaForCausalLMImpl& model, const at::Device& device) {
  return [&model, device](const Batch& batch) {
    at::NoGradGuard no_grad;
    const Batch on = batch.to(device);
    const auto scores = token_scores(model.forward(model_input(on)), on.labels);
    return TokenScores{scores.loss.to(at::kCPU), scores.predicted.to(at::kCPU)};
  };
}

LossResult evaluate_loss(const Scorer& score, const Config& config, const EvalShare& share) {
  auto source = make_document_source(config.data, config.model.vocab_size, config.train.seed, Split::Eval);
  Packer packer(*source, config.data);
  const int64_t buckets = config.eval.position_buckets, seq_len = config.data.seq_len;
  const int64_t micro = config.train.micro_batch_size, batches = (config.eval.sequences + micro - 1) / micro;
  auto bucket_sum = at::zeros({buckets}, at::kDouble), bucket_count = at::zeros({buckets}, at::kDouble);
  Batch first;
  for (int64_t index = 0; index < batches; ++index) {
    // Every rank packs every batch (the stream is sequential), runs its own.
    const auto batch = packer.next(std::min(micro, config.eval.sequences - index * micro), seq_len);
    if (index == 0) first = batch;
    if (!share.mine(index)) continue;
    const auto losses = score(batch).loss.reshape({-1}).to(at::kDouble);
    // Buckets by position: the context a token sees (its document's, when
    // documents are masked and positions restart).
    const auto bucket = batch.positions.reshape({-1}).clamp(0, seq_len - 1).mul(buckets).div(seq_len, "floor");
    const auto valid = batch.labels.reshape({-1}).ne(kIgnoreIndex).to(at::kDouble);
    bucket_sum.index_add_(0, bucket, losses * valid);
    bucket_count.index_add_(0, bucket, valid);
  }
  for (int64_t k = 0; k < share.fillers(batches); ++k) score(first);
  share.sum(bucket_sum);
  share.sum(bucket_count);
  LossResult result;
  result.tokens = static_cast<int64_t>(bucket_count.sum().item<double>());
  result.loss = bucket_sum.sum().item<double>() / std::max<int64_t>(1, result.tokens);
  result.perplexity = std::exp(result.loss);
  // A bucket no token reached (documents shorter than its positions) has no loss.
  const auto means = at::where(bucket_count > 0, bucket_sum / bucket_count.clamp_min(1), std::nan(""));
  for (int64_t b = 0; b < buckets; ++b) result.by_position.push_back(means[b].item<double>());
  return result;
}

namespace {

// Passkey samples [first, first + n) at `length` tokens, one sequence each.
std::pair<Batch, std::vector<PasskeySample>> passkey_batch(const PasskeyCorpus& corpus, int64_t first, int64_t n,
                                                           int64_t length, int64_t depths) {
  std::vector<PasskeySample> samples;
  auto tokens = at::empty({n, length}, at::kLong);
  for (int64_t i = 0; i < n; ++i) {
    samples.push_back(corpus.sample(first + i, length, depth_of((first + i) % depths, depths)));
    std::copy(samples.back().tokens.begin(), samples.back().tokens.end(), tokens[i].data_ptr<int64_t>());
  }
  auto positions = at::arange(length, at::kLong).unsqueeze(0).expand({n, length}).contiguous();
  return {Batch{tokens, at::full({n, length}, kIgnoreIndex, at::kLong), positions, {}, {}, nullptr},
          std::move(samples)};
}

}  // namespace

PasskeyResult evaluate_passkey(const Scorer& score, const Config& config, int64_t length, const EvalShare& share) {
  PasskeyCorpus corpus(config.data.passkey, config.model.vocab_size, config.train.seed ^ 0x9a55ce7ULL);
  const int64_t depths = config.eval.passkey_depths;
  PasskeyResult result;
  result.length = length;
  std::vector<int64_t> exact_at(depths, 0), samples_at(depths, 0);
  int64_t digits_right = 0, digits_total = 0, exact = 0;
  const int64_t micro = config.train.micro_batch_size, batches = (config.eval.passkey_samples + micro - 1) / micro;
  for (int64_t index = 0; index < batches; ++index) {
    if (!share.mine(index)) continue;
    const int64_t first = index * micro, n = std::min(micro, config.eval.passkey_samples - first);
    const auto [batch, samples] = passkey_batch(corpus, first, n, length, depths);
    // Token t is predicted at position t - 1; with every earlier digit right,
    // the argmax under teacher forcing is exactly what greedy decoding emits.
    const auto predicted = score(batch).predicted;
    for (int64_t i = 0; i < n; ++i) {
      bool all = true;
      for (int64_t d = 0; d < samples[i].digits; ++d) {
        const int64_t at = samples[i].answer_start + d;
        const bool right = predicted[i][at - 1].item<int64_t>() == samples[i].tokens[at];
        digits_right += right;
        all = all && right;
        ++digits_total;
      }
      exact += all;
      exact_at[(first + i) % depths] += all;
      ++samples_at[(first + i) % depths];
    }
    result.samples += n;
  }
  if (const int64_t fillers = share.fillers(batches); fillers > 0) {
    const auto filler = passkey_batch(corpus, 0, std::min(micro, config.eval.passkey_samples), length, depths).first;
    for (int64_t k = 0; k < fillers; ++k) score(filler);
  }
  // The counts over the ranks: [digits right, digits, exact, samples, exact and samples at each depth].
  auto counts = at::empty({4 + 2 * depths}, at::kLong);
  auto* c = counts.data_ptr<int64_t>();
  c[0] = digits_right, c[1] = digits_total, c[2] = exact, c[3] = result.samples;
  for (int64_t d = 0; d < depths; ++d) c[4 + d] = exact_at[d], c[4 + depths + d] = samples_at[d];
  share.sum(counts);
  c = counts.data_ptr<int64_t>();
  digits_right = c[0], digits_total = c[1], exact = c[2], result.samples = c[3];
  for (int64_t d = 0; d < depths; ++d) exact_at[d] = c[4 + d], samples_at[d] = c[4 + depths + d];
  result.digit_accuracy = static_cast<double>(digits_right) / std::max<int64_t>(1, digits_total);
  result.exact_match = static_cast<double>(exact) / std::max<int64_t>(1, result.samples);
  for (int64_t d = 0; d < depths; ++d)
    result.exact_by_depth.push_back(static_cast<double>(exact_at[d]) / std::max<int64_t>(1, samples_at[d]));
  return result;
}

EvalReport evaluate(const Scorer& score, const Config& config, const EvalShare& share) {
  EvalReport report;
  if (config.eval.sequences > 0) report.loss = evaluate_loss(score, config, share);
  if (config.data.source == DataSourceKind::passkey && config.eval.passkey_samples > 0)
    for (int64_t length : passkey_lengths(config))
      report.passkey.push_back(evaluate_passkey(score, config, length, share));
  return report;
}

std::string describe(const EvalReport& report, const Config& config) {
  std::ostringstream out;
  if (report.loss) out << loss_lines(*report.loss, config.data.seq_len) << "\n";
  if (report.passkey.empty()) return out.str();
  const int64_t digits = config.data.passkey.digits, depths = config.eval.passkey_depths;
  for (const auto& r : report.passkey)
    out << "passkey retrieval at " << r.length << " tokens: exact " << percent(r.exact_match) << " (chance "
        << formatted("%.4g%%", 100 * std::pow(0.1, digits)) << "), digits " << percent(r.digit_accuracy)
        << " (chance 10%) over " << r.samples << " samples\n";
  if (depths == 1) return out.str();
  // Exact match by length (rows) and depth of the key (columns).
  out << "passkey exact match by depth of the key:\n  length ";
  for (int64_t d = 0; d < depths; ++d) out << formatted("%7.1f%%", 100 * depth_of(d, depths));
  out << "\n";
  for (const auto& r : report.passkey) {
    out << formatted("  %6.0f ", static_cast<double>(r.length));
    for (double e : r.exact_by_depth) out << formatted("%7.1f%%", 100 * e);
    out << "\n";
  }
  return out.str();
}

nlohmann::json to_json(const EvalReport& report) {
  nlohmann::json j = nlohmann::json::object();
  if (report.loss)
    j["loss"] = {{"loss", report.loss->loss},
                 {"perplexity", report.loss->perplexity},
                 {"tokens", report.loss->tokens},
                 {"by_position", report.loss->by_position}};
  for (const auto& r : report.passkey)
    j["passkey"].push_back({{"length", r.length},
                            {"exact", r.exact_match},
                            {"digits", r.digit_accuracy},
                            {"samples", r.samples},
                            {"exact_by_depth", r.exact_by_depth}});
  return j;
}

}  // namespace lt
