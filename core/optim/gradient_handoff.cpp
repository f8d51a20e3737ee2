#include "core/optim/gradient_handoff.h"

#include <torch/autograd.h>
#include <torch/csrc/autograd/variable.h>

namespace lt {
namespace {

struct Handoff : torch::CustomClassHolder {
  GradientHandoff* owner;
  int64_t scope;
};

struct EnterScope : torch::autograd::Function<EnterScope> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            c10::intrusive_ptr<Handoff> handoff) {
    ctx->saved_data["handoff"] = c10::IValue::make_capsule(std::move(handoff));
    return x.view_as(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto h = c10::static_intrusive_pointer_cast<Handoff>(ctx->saved_data["handoff"].toCapsule());
    h->owner->left(h->scope);
    return {grads[0], at::Tensor()};
  }
};

}  // namespace

int64_t GradientHandoff::scope_of(const std::string& name) {
  static const std::string layers = "model.layers.";
  if (name.rfind(layers, 0) == 0) return std::stoll(name.substr(layers.size()));
  if (name.rfind("model.norm.", 0) == 0 || name.rfind("lm_head.", 0) == 0) return kHead;
  return kUnscoped;
}

at::Tensor GradientHandoff::enter(const at::Tensor& x, int64_t scope) {
  if (!at::GradMode::is_enabled() || !x.requires_grad()) return x;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++open_[scope];
  }
  auto handoff = c10::make_intrusive<Handoff>();
  handoff->owner = this;
  handoff->scope = scope;
  return EnterScope::apply(x, handoff);
}

GradientHandoff::Listening GradientHandoff::listen(const std::shared_ptr<GradientHandoff>& handoff, Listener listener) {
  std::lock_guard<std::mutex> lock(handoff->mutex_);
  handoff->listeners_.emplace_back(handoff->next_id_, std::move(listener));
  return Listening(handoff, handoff->next_id_++);
}

GradientHandoff::Listening& GradientHandoff::Listening::operator=(Listening&& other) noexcept {
  std::swap(handoff_, other.handoff_);
  std::swap(id_, other.id_);
  return *this;
}

GradientHandoff::Listening::~Listening() {
  if (!handoff_) return;
  std::lock_guard<std::mutex> lock(handoff_->mutex_);
  std::erase_if(handoff_->listeners_, [this](const auto& l) { return l.first == id_; });
}

void GradientHandoff::reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  open_.clear();
}

int64_t GradientHandoff::open(int64_t scope) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto found = open_.find(scope);
  return found == open_.end() ? 0 : found->second;
}

void GradientHandoff::left(int64_t scope) {
  std::vector<Listener> listeners;
  bool final = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& open = open_[scope];
    if (open > 0) --open;
    final = open == 0;
    for (const auto& l : listeners_) listeners.push_back(l.second);
  }
  for (const auto& l : listeners) l(scope, final);
}

void renew_grad_accumulator(const at::Tensor& param) {
  torch::autograd::impl::get_autograd_meta(param)->grad_accumulator_.reset();
}

}  // namespace lt
