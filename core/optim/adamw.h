// AdamW with decoupled weight decay (Loshchilov & Hutter): the update, and
// the fused kernel, of torch.optim.AdamW(fused=True). Norms and biases get
// no weight decay. It updates
// segments of parameters: whole parameters on one rank, and with ZeRO-1 the
// slices of the flattened parameters this rank owns. The state is plain
// tensors per segment, so checkpoints can reshard it.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <functional>
#include <optional>
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

// Elements [start, end) of a parameter's flattened form.
struct ParamSegment {
  std::string name;
  at::Tensor param;
  int64_t start = 0, end = 0;
  std::vector<int64_t> shape;  // the parameter's (its tensor may be a placeholder under ZeRO-3)
  // Where sharded model state (ZeRO-2/3) keeps the segment's fp32 values
  // and main gradient instead of in `param`: 1-D views of size() elements.
  at::Tensor master, main_grad;

  int64_t size() const { return end - start; }
  int64_t numel() const { return c10::multiply_integers(shape); }
  at::Tensor values() const { return master.defined() ? master : param.detach().view(-1).narrow(0, start, size()); }
  // Undefined while the parameter has no gradient.
  at::Tensor grad() const;
};

// Every parameter whole.
std::vector<ParamSegment> whole(const std::vector<NamedParameter>& params);

// ZeRO's cut: the part of `p`, stored from `offset` in a flat buffer, that
// falls in the buffer's elements [lo, hi), if any.
std::optional<ParamSegment> segment_within(const NamedParameter& p, int64_t offset, int64_t lo, int64_t hi);
// The same cut of a parameter of `shape` whose values and gradients a shard
// holds (ZeRO-2/3): `values` and `grads` are the buffer's elements [lo, hi).
std::optional<ParamSegment> shard_segment(const NamedParameter& p, const std::vector<int64_t>& shape, int64_t offset,
                                          int64_t lo, int64_t hi, const at::Tensor& values, const at::Tensor& grads);

// Norm weights and biases (and any tensor of fewer than 2 dimensions) are not decayed.
bool takes_weight_decay(const std::string& name, int64_t dims);

class AdamW {
 public:
  AdamW(std::vector<ParamSegment> segments, AdamWOptions options);
  AdamW(const std::vector<NamedParameter>& params, AdamWOptions options) : AdamW(whole(params), options) {}

  void step(double lr) {
    begin_step();
    update(0, size(), lr);
  }
  // A step in parts (the chunks' update overlapped with backward):
  // begin_step() once, then update() over every slot exactly once.
  void begin_step() { ++steps_; }
  void update(size_t first, size_t last, double lr);
  size_t size() const { return slots_.size(); }
  // Slots [first, last)'s values and moments copied into `into` (allocated
  // on first use), and back: an update undone exactly.
  void save(size_t first, size_t last, std::vector<at::Tensor>& into) const;
  void restore(size_t first, size_t last, const std::vector<at::Tensor>& from);
  void zero_grad();
  int64_t steps() const { return steps_; }

  struct SegmentState {
    const ParamSegment& segment;
    const at::Tensor& exp_avg;
    const at::Tensor& exp_avg_sq;
  };
  std::vector<SegmentState> state() const;
  // `read(name, moment, start, end, into)` fills `into` with elements
  // [start, end) of the flattened moment ("exp_avg" or "exp_avg_sq") of
  // parameter `name`.
  using StateReader = std::function<void(const std::string&, const std::string&, int64_t, int64_t, at::Tensor)>;
  void load_state(const StateReader& read, int64_t steps);

 private:
  struct Slot {
    ParamSegment segment;
    bool decay;
    at::Tensor exp_avg, exp_avg_sq;  // 1-D, the segment's size
  };
  // What an update changes: the values and both moments.
  static std::array<at::Tensor, 3> changed(const Slot& s) { return {s.segment.values(), s.exp_avg, s.exp_avg_sq}; }
  std::vector<Slot> slots_;
  AdamWOptions options_;
  int64_t steps_ = 0;
};

}  // namespace lt
