// AdamW with decoupled weight decay (Loshchilov & Hutter), the same update as
// torch.optim.AdamW. Norms and biases get no weight decay. The state is
// plain named tensors, so checkpoints and (later) host-offloaded chunks can
// own it.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

namespace lt {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

struct NamedParameter {
  std::string name;
  at::Tensor tensor;
};

// Norm weights and biases are not decayed.
bool takes_weight_decay(const std::string& name, const at::Tensor& p);

class AdamW {
 public:
  AdamW(std::vector<NamedParameter> params, AdamWOptions options);

  void step(double lr);
  void zero_grad();
  int64_t steps() const { return steps_; }

  // "<param>.exp_avg" and "<param>.exp_avg_sq" for every parameter.
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  void load_state(const std::map<std::string, at::Tensor>& state, int64_t steps);

 private:
  struct Slot {
    NamedParameter param;
    bool decay;
    at::Tensor exp_avg, exp_avg_sq;
  };
  std::vector<Slot> slots_;
  AdamWOptions options_;
  int64_t steps_ = 0;
};

}  // namespace lt
