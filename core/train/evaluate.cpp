#include "core/train/evaluate.h"

#include <cmath>
#include <cstdio>

#include "core/data/packer.h"
#include "core/data/passkey_corpus.h"
#include "core/train/loss.h"

namespace lt {

namespace {

std::string percent(double fraction, const char* pattern = "%.1f%%") {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), pattern, 100 * fraction);
  return buffer;
}

}  // namespace

std::string describe(const LossResult& r) {
  char buffer[128];
  std::snprintf(buffer, sizeof(buffer), "eval: loss %.4f | perplexity %.2f over %lld tokens", r.loss, r.perplexity,
                static_cast<long long>(r.tokens));
  return buffer;
}

std::string describe(const PasskeyResult& r, int64_t digits) {
  return "passkey retrieval at " + std::to_string(r.length) + " tokens: exact " + percent(r.exact_match) +
         " (chance " + percent(std::pow(0.1, digits), "%.4g%%") + "), digits " + percent(r.digit_accuracy) +
         " (chance 10%) over " + std::to_string(r.samples) + " samples";
}

LossResult evaluate_loss(LlamaForCausalLMImpl& model, const Config& config, const at::Device& device) {
  at::NoGradGuard no_grad;
  auto source = make_document_source(config.data, config.model.vocab_size, config.train.seed, Split::Eval);
  Packer packer(*source, config.data);
  LossResult result;
  double total = 0;
  for (int64_t done = 0; done < config.eval.sequences; done += config.train.micro_batch_size) {
    auto batch = packer.next(std::min(config.train.micro_batch_size, config.eval.sequences - done), config.data.seq_len)
                     .to(device);
    total += loss_sum(model, batch).item<double>();
    result.tokens += batch.valid_tokens();
  }
  result.loss = total / std::max<int64_t>(1, result.tokens);
  result.perplexity = std::exp(result.loss);
  return result;
}

PasskeyResult evaluate_passkey(LlamaForCausalLMImpl& model, const Config& config, int64_t length,
                               const at::Device& device) {
  at::NoGradGuard no_grad;
  PasskeyCorpus corpus(config.data.passkey, config.model.vocab_size, config.train.seed ^ 0x9a55ce7ULL);
  PasskeyResult result;
  result.length = length;
  int64_t digits_right = 0, digits_total = 0, exact = 0;
  const int64_t batch_size = config.train.micro_batch_size;
  for (int64_t first = 0; first < config.eval.passkey_samples; first += batch_size) {
    const int64_t n = std::min(batch_size, config.eval.passkey_samples - first);
    std::vector<PasskeySample> samples;
    auto tokens = at::empty({n, length}, at::kLong);
    for (int64_t i = 0; i < n; ++i) {
      samples.push_back(corpus.sample(first + i, length));
      std::copy(samples.back().tokens.begin(), samples.back().tokens.end(), tokens[i].data_ptr<int64_t>());
    }
    auto positions = at::arange(length, at::kLong).unsqueeze(0).expand({n, length}).contiguous();
    auto logits = model.forward({tokens.to(device), positions.to(device), AttentionMask{}});
    // Token t is predicted at position t - 1; with every earlier digit right,
    // the argmax under teacher forcing is exactly what greedy decoding emits.
    auto predicted = logits.argmax(-1).to(at::kCPU);
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
    }
    result.samples += n;
  }
  result.digit_accuracy = static_cast<double>(digits_right) / std::max<int64_t>(1, digits_total);
  result.exact_match = static_cast<double>(exact) / std::max<int64_t>(1, result.samples);
  return result;
}

}  // namespace lt
