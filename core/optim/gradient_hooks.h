// Callbacks that run after a parameter's gradient has been accumulated into
// its .grad (a post-hook on the parameter's gradient accumulator): how data
// parallelism starts a bucket's reduction and the chunk manager moves a
// layer's gradients to the host, during backward. The hooks go when the
// object does; other hooks on the same parameters stay.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <memory>

namespace lt {

class GradientHooks {
 public:
  GradientHooks();
  ~GradientHooks();
  GradientHooks(const GradientHooks&) = delete;
  GradientHooks& operator=(const GradientHooks&) = delete;

  void add(const at::Tensor& param, std::function<void()> callback);
  // After `param.set_data(...)` to another dtype or device, PyTorch gives
  // the parameter a new gradient accumulator: its hooks move onto it.
  void follow(const at::Tensor& param);
  // After `param.set_data(...)` to another shape PyTorch keeps the
  // accumulator, which checks gradients against the old shape: the
  // parameter gets a new one, and its hooks move onto it.
  void renew(const at::Tensor& param);

 private:
  struct Added;
  std::unique_ptr<Added> added_;
};

}  // namespace lt
