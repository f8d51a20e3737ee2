#include "parallel/mesh/mesh.h"

#include <algorithm>

#include "core/util/error.h"
#include "parallel/comm/work.h"

namespace lt {

namespace {

// Waits for `request` under the watchdog: a rank that never arrives is an
// error naming `step` after `timeout_s`.
void wait_for_setup(MPI_Request& request, MPI_Comm comm, const std::string& step, double timeout_s) {
  int rank = 0, size = 1, world_rank = 0;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  Work(Work::Source{step, "world", rank, size, world_rank, timeout_s}, [&request] {
    int done = 0;
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    return done != 0;
  }).wait();
}

}  // namespace

int setup_sum(MPI_Comm comm, int value, const std::string& step, double timeout_s) {
  int sum = 0;
  MPI_Request request;
  MPI_Iallreduce(&value, &sum, 1, MPI_INT, MPI_SUM, comm, &request);
  wait_for_setup(request, comm, step, timeout_s);
  return sum;
}

std::vector<std::string> setup_gather(MPI_Comm comm, const std::string& text, const std::string& step,
                                      double timeout_s) {
  int size = 1;
  MPI_Comm_size(comm, &size);
  const int length = static_cast<int>(text.size());
  std::vector<int> lengths(size), offsets(size);
  MPI_Request request;
  MPI_Iallgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, comm, &request);
  wait_for_setup(request, comm, step, timeout_s);
  int64_t total = 0;
  for (int r = 0; r < size; ++r) {
    if (total + lengths[r] > INT32_MAX) fail(step + ": the ranks' texts exceed 2 GiB");
    offsets[r] = static_cast<int>(total), total += lengths[r];
  }
  std::string all(static_cast<size_t>(total), '\0');
  MPI_Iallgatherv(text.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR, comm, &request);
  wait_for_setup(request, comm, step, timeout_s);
  std::vector<std::string> texts;
  for (int r = 0; r < size; ++r) texts.push_back(all.substr(offsets[r], lengths[r]));
  return texts;
}

void agree_on(Communicator& group, const std::function<void()>& work) {
  std::string error;
  try {
    work();
  } catch (const Error& e) {
    error = e.what();
  }
  const auto errors = group.all_gather(error);
  for (size_t r = 0; r < errors.size(); ++r) {
    if (errors[r].empty()) continue;
    const bool everywhere = std::none_of(errors.begin(), errors.end(), [](const std::string& e) { return e.empty(); });
    throw AgreedError(everywhere ? errors[r] : "rank " + std::to_string(r) + ": " + errors[r], group.rank() == 0);
  }
}

MpiSession::MpiSession(int* argc, char*** argv) {
  // Every communicator makes its MPI calls on a thread of its own.
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
  if (provided < MPI_THREAD_MULTIPLE)
    fail(
        "the MPI library lacks MPI_THREAD_MULTIPLE, which longtrain's communicators need: use an MPI built "
        "with thread support (Debian's OpenMPI has it)");
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

MpiSession::~MpiSession() {
  mesh_.reset();
  MPI_Finalize();
}

Mesh& MpiSession::create_mesh(const Layout& layout, double timeout_s, DeviceTransport transport) {
  mesh_ = std::make_unique<Mesh>(layout, MPI_COMM_WORLD, timeout_s, transport);
  return *mesh_;
}

Mesh::Mesh(const Layout& layout, MPI_Comm world, double timeout_s, DeviceTransport transport)
    : layout_(layout), world_(world), timeout_s_(timeout_s), transport_(transport) {
  int size = 0;
  MPI_Comm_rank(world, &rank_);
  MPI_Comm_size(world, &size);
  LT_CHECK(size == layout_.world(), "mesh: the layout is for " + std::to_string(layout_.world()) +
                                        " ranks, the world has " + std::to_string(size));
  // MPI's splits block with no timeout: every rank must be here first.
  setup_sum(world, 0, "building the mesh", timeout_s);
  for (Group kind : kAllGroups) {
    // Groups partition the world; the lowest rank of each names it.
    MPI_Comm comm;
    MPI_Comm_split(world, layout_.group(kind, rank_).front(), rank_, &comm);
    groups_[kind] = std::make_unique<Communicator>(comm, group_name(kind), timeout_s, transport);
  }
  MPI_Comm node;
  MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_size(node, &local_size_);
  MPI_Comm_free(&node);
}

Communicator& Mesh::subgroup(const std::string& name, int color) {
  auto& slot = subgroups_[name];
  if (!slot) {
    setup_sum(world_, 0, "building group '" + name + "'", timeout_s_);
    MPI_Comm comm;
    MPI_Comm_split(world_, color, rank_, &comm);
    add_subgroup(slot, comm, name);
  }
  return *slot;
}

Communicator& Mesh::twin(Communicator& group) {
  const std::string name = group.name() + ".twin";
  auto& slot = subgroups_[name];
  if (!slot) {
    MPI_Comm comm;
    MPI_Comm_dup(group.mpi(), &comm);
    add_subgroup(slot, comm, name);
  }
  return *slot;
}

// A group made after the device was chosen starts its transport at once
// (collective over its ranks, as making it was).
Communicator& Mesh::add_subgroup(std::unique_ptr<Communicator>& slot, MPI_Comm comm, const std::string& name) {
  slot = std::make_unique<Communicator>(comm, name, timeout_s_, transport_);
  if (device_ && transport_ != DeviceTransport::host) slot->enable_device(device_->index());
  return *slot;
}

void Mesh::enable_device(const at::Device& device) {
  if (device_) {
    LT_CHECK(*device_ == device,
             "mesh: the device transport was enabled for " + device_->str() + ", not " + device.str());
    return;
  }
  if (transport_ == DeviceTransport::host) {
    device_ = device;
    return;
  }
  if (transport_ == DeviceTransport::nccl)
    LT_CHECK(device.is_cuda(), "mesh: NCCL carries CUDA tensors, and the device is " + device.str());
  else LT_CHECK(!device.is_cuda(), "mesh: NCCL's emulation (parallel.emulate_nccl) is for CPU runs");
  setup_sum(world_, 0, "enabling the device transport", timeout_s_);  // every rank arrives; then each group joins
  for (auto& [kind, comm] : groups_) comm->enable_device(device.index());
  for (auto& [name, comm] : subgroups_) comm->enable_device(device.index());
  device_ = device;
}

}  // namespace lt
