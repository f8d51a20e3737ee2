// Forward + backward time of each attention kernel on this machine, causal
// and with packed documents: the measurement behind attention()'s choice
// (model.attention: auto). Prints one JSON object per case.
//
// usage: lt_bench_attention [SEQ...]
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/attention/attention.h"
#include "core/util/resources.h"

namespace {

double seconds_per_call(lt::AttentionKernel kernel, int64_t seq, bool documents) {
  const int64_t heads = 8, dim = 64;
  auto q = at::randn({1, seq, heads, dim}).requires_grad_();
  auto k = at::randn({1, seq, heads, dim}).requires_grad_();
  auto v = at::randn({1, seq, heads, dim}).requires_grad_();
  lt::AttentionMask mask;
  if (documents) {  // four documents of unequal length
    auto index = at::arange(seq, at::kLong);
    mask.q_document =
        (index >= seq / 8).to(at::kLong) + (index >= seq / 3).to(at::kLong) + (index >= seq / 2).to(at::kLong);
    mask.q_document = mask.q_document.unsqueeze(0);
    mask.k_document = mask.q_document;
  }
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    auto out = lt::attention(q, k, v, mask, {kernel, 512}).out;
    out.sum().backward();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  at::set_num_threads(static_cast<int>(lt::default_threads(0)));
  std::vector<int64_t> lengths;
  for (int i = 1; i < argc; ++i) lengths.push_back(std::atoll(argv[i]));
  if (lengths.empty()) lengths = {2048, 8192};
  for (int64_t seq : lengths)
    for (bool documents : {false, true}) {
      const double flash = seconds_per_call(lt::AttentionKernel::flash, seq, documents);
      const double blockwise = seconds_per_call(lt::AttentionKernel::blockwise, seq, documents);
      nlohmann::ordered_json out = {{"seq", seq},
                                    {"documents", documents},
                                    {"flash_s", flash},
                                    {"blockwise_s", blockwise},
                                    {"flash_speedup", blockwise / flash}};
      std::printf("%s\n", out.dump().c_str());
    }
  return 0;
}
