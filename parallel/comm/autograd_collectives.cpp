#include "parallel/comm/autograd_collectives.h"

#include <torch/autograd.h>

namespace lt {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The communicator rides in the autograd context as an address: the
// communicator outlives every graph built on it (it belongs to the Mesh).
void remember(AutogradContext* ctx, Communicator& comm) {
  ctx->saved_data["comm"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(&comm));
}
Communicator& recall(AutogradContext* ctx) {
  return *reinterpret_cast<Communicator*>(static_cast<intptr_t>(ctx->saved_data["comm"].toInt()));
}

at::Tensor raw_all_to_all(const at::Tensor& x, Communicator& comm, int64_t scatter_dim, int64_t gather_dim) {
  if (comm.size() == 1) return x;
  TORCH_CHECK(x.size(scatter_dim) % comm.size() == 0, "all_to_all: dim ", scatter_dim, " (", x.size(scatter_dim),
              ") does not split over ", comm.size(), " ranks");
  auto chunks = at::stack(x.chunk(comm.size(), scatter_dim), 0).contiguous();
  auto received = comm.all_to_all(chunks);
  return at::cat(received.unbind(0), gather_dim);
}

at::Tensor raw_all_gather(const at::Tensor& x, Communicator& comm, int64_t dim) {
  if (comm.size() == 1) return x;
  return comm.all_gather(x.movedim(dim, 0).contiguous()).movedim(0, dim).contiguous();
}

at::Tensor raw_reduce_scatter(const at::Tensor& x, Communicator& comm, int64_t dim) {
  if (comm.size() == 1) return x;
  return comm.reduce_scatter(x.movedim(dim, 0).contiguous()).movedim(0, dim).contiguous();
}

at::Tensor raw_all_reduce(const at::Tensor& x, Communicator& comm) {
  if (comm.size() == 1) return x;
  auto out = x.contiguous().clone();
  comm.all_reduce(out);
  return out;
}

struct AllToAll : torch::autograd::Function<AllToAll> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Communicator* comm, int64_t scatter_dim,
                            int64_t gather_dim) {
    remember(ctx, *comm);
    ctx->saved_data["scatter"] = scatter_dim;
    ctx->saved_data["gather"] = gather_dim;
    return raw_all_to_all(x, *comm, scatter_dim, gather_dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto& d = ctx->saved_data;
    return {raw_all_to_all(grads[0], recall(ctx), d["gather"].toInt(), d["scatter"].toInt()), {}, {}, {}};
  }
};

struct UnevenAllToAll : torch::autograd::Function<UnevenAllToAll> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Communicator* comm,
                            std::vector<int64_t> send_rows, std::vector<int64_t> recv_rows) {
    remember(ctx, *comm);
    ctx->saved_data["send"] = send_rows;
    ctx->saved_data["recv"] = recv_rows;
    return comm->all_to_all(x.contiguous(), send_rows, recv_rows);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto& d = ctx->saved_data;
    return {
        recall(ctx).all_to_all(grads[0].contiguous(), d["recv"].toIntVector(), d["send"].toIntVector()), {}, {}, {}};
  }
};

struct AllGather : torch::autograd::Function<AllGather> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Communicator* comm, int64_t dim) {
    remember(ctx, *comm);
    ctx->saved_data["dim"] = dim;
    return raw_all_gather(x, *comm, dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {raw_reduce_scatter(grads[0], recall(ctx), ctx->saved_data["dim"].toInt()), {}, {}};
  }
};

struct ReduceScatter : torch::autograd::Function<ReduceScatter> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Communicator* comm, int64_t dim) {
    remember(ctx, *comm);
    ctx->saved_data["dim"] = dim;
    return raw_reduce_scatter(x, *comm, dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {raw_all_gather(grads[0], recall(ctx), ctx->saved_data["dim"].toInt()), {}, {}};
  }
};

struct CopyToRegion : torch::autograd::Function<CopyToRegion> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Communicator* comm) {
    remember(ctx, *comm);
    return x.view_as(x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {raw_all_reduce(grads[0], recall(ctx)), {}};
  }
};

struct ReduceFromRegion : torch::autograd::Function<ReduceFromRegion> {
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, Communicator* comm) {
    return raw_all_reduce(x, *comm);
  }
  static variable_list backward(AutogradContext*, variable_list grads) { return {grads[0], {}}; }
};

}  // namespace

at::Tensor all_to_all(const at::Tensor& x, Communicator& comm, int64_t scatter_dim, int64_t gather_dim) {
  return AllToAll::apply(x, &comm, scatter_dim, gather_dim);
}
at::Tensor all_to_all(const at::Tensor& x, Communicator& comm, std::vector<int64_t> send_rows,
                      std::vector<int64_t> recv_rows) {
  return UnevenAllToAll::apply(x, &comm, std::move(send_rows), std::move(recv_rows));
}
at::Tensor all_gather(const at::Tensor& x, Communicator& comm, int64_t dim) { return AllGather::apply(x, &comm, dim); }
at::Tensor reduce_scatter(const at::Tensor& x, Communicator& comm, int64_t dim) {
  return ReduceScatter::apply(x, &comm, dim);
}
at::Tensor copy_to_region(const at::Tensor& x, Communicator& comm) { return CopyToRegion::apply(x, &comm); }
at::Tensor reduce_from_region(const at::Tensor& x, Communicator& comm) { return ReduceFromRegion::apply(x, &comm); }

}  // namespace lt
