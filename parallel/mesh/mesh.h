// The rank grid of a running job: this rank's coordinate and one
// communicator per group it belongs to, each split from the world with
// MPI_Comm_split once, at start-up (collective: every rank builds the Mesh).
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <optional>

#include "parallel/comm/communicator.h"
#include "parallel/mesh/layout.h"

namespace lt {

class Mesh;

// MPI for the life of the program (MPI_Init_thread .. MPI_Finalize), and
// the job's mesh. The mesh lives here, not on the stack of the code that
// runs the job, so that an error unwinding that code reaches the entry
// point (which aborts the job) without first waiting for this rank's
// communicators, one of which may be stuck in a collective.
// The sum of `value` over `comm`, for set-up steps every rank must reach
// (agreeing on the recipe, the splits that build the mesh, NCCL's init):
// waited for under the watchdog, so a rank that never arrives is an error
// naming `step` after `timeout_s`, not a hang.
int setup_sum(MPI_Comm comm, int value, const std::string& step, double timeout_s);
// Every rank's `text`, by rank, gathered the same way.
std::vector<std::string> setup_gather(MPI_Comm comm, const std::string& text, const std::string& step,
                                      double timeout_s);

// Runs `work` on every rank of `group` (work without collectives); an
// lt::Error on any rank is thrown on all as an AgreedError that rank 0
// prints, so a failure the ranks meet alike (a damaged checkpoint, a bad HF
// model) is one line, not one a rank, and the job ends without an abort.
void agree_on(Communicator& group, const std::function<void()>& work);

class MpiSession {
 public:
  MpiSession(int* argc = nullptr, char*** argv = nullptr);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int world_rank() const { return rank_; }
  int world_size() const { return size_; }

  // Collective: builds the job's mesh over MPI_COMM_WORLD.
  Mesh& create_mesh(const Layout& layout, double timeout_s, DeviceTransport transport = DeviceTransport::host);

 private:
  int rank_ = 0, size_ = 1;
  std::unique_ptr<Mesh> mesh_;
};

class Mesh {
 public:
  // `transport`: how the groups carry device tensors (communicator.h); a
  // device-bound mesh takes no operation until enable_device.
  Mesh(const Layout& layout, MPI_Comm world, double timeout_s, DeviceTransport transport = DeviceTransport::host);

  const Layout& layout() const { return layout_; }
  int rank() const { return rank_; }
  Coord coord() const { return layout_.coord(rank_); }
  Communicator& group(Group kind) { return *groups_.at(kind); }
  // Collective over the world, once per name: a group of its own for the
  // ranks passing the same `color` (groups the layout does not name).
  Communicator& subgroup(const std::string& name, int color);
  // Collective over `group`'s ranks, once per group: a second communicator
  // over them, whose operations never queue behind the group's own (ZeRO-3
  // gathers weights beside the gradient reductions).
  Communicator& twin(Communicator& group);

  // Ranks of this job on this machine (from a shared-memory split), and
  // this rank's place among them: its GPU on CUDA builds.
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }

  // Collective, once the device is chosen and before any model or state is
  // built: every group, and every group made later, starts its device
  // transport (NCCL on `device`, or its emulation). Again: nothing.
  void enable_device(const at::Device& device);

 private:
  Communicator& add_subgroup(std::unique_ptr<Communicator>& slot, MPI_Comm comm, const std::string& name);

  Layout layout_;
  int rank_ = 0, local_rank_ = 0, local_size_ = 1;
  MPI_Comm world_;
  double timeout_s_;
  DeviceTransport transport_;
  std::optional<at::Device> device_;  // once enabled
  std::map<Group, std::unique_ptr<Communicator>> groups_;
  std::map<std::string, std::unique_ptr<Communicator>> subgroups_;
};

}  // namespace lt
