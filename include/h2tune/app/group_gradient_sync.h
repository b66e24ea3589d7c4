// GradientSync (train/gradient_sync.h) over a client's data-parallel group of ranks: on CPUs
// every member's gradients are gathered over MPI and summed in member order, so every member gets
// the same bits whatever MPI's reduction algorithm; on CUDA devices, with NCCL in the build, one
// in-place NCCL all-reduce of a flat device buffer (without NCCL: staged through the host as on
// CPUs).
#pragma once

#include <csignal>
#include <memory>
#include <vector>

#include <torch/types.h>

#include "h2tune/comm/communicator.h"
#include "h2tune/comm/nccl_communicator.h"
#include "h2tune/train/gradient_sync.h"

namespace h2tune {

class GroupGradientSync : public GradientSync {
public:
    // Collective over `group` when `device` is a CUDA device and NCCL is in the build (the NCCL
    // communicator is created now). `stop` is this rank's stop flag (app/stop_signal.h).
    GroupGradientSync(const Communicator& group, const volatile std::sig_atomic_t* stop, torch::Device device);

    void sum(const std::vector<torch::Tensor>& parameters, std::vector<double>& scalars) override;
    bool stop_requested() const override { return stop_seen_; }
    bool uses_nccl() const { return nccl_ != nullptr; }

private:
    void sum_on_host(const std::vector<torch::Tensor>& parameters, std::vector<double>& scalars);
    void sum_with_nccl(const std::vector<torch::Tensor>& parameters, std::vector<double>& scalars);

    const Communicator& group_;
    const volatile std::sig_atomic_t* stop_;
    torch::Device device_;
    std::unique_ptr<NcclCommunicator> nccl_;
    bool stop_seen_ = false;
};

}  // namespace h2tune
