// NCCL over one MPI communicator's ranks, each on its own CUDA device: the data-parallel group
// of a client on GPUs sums its gradients on the devices without staging them through the host.
// Built only when LibTorch has CUDA and NCCL was found (H2TUNE_WITH_NCCL); elsewhere
// nccl_available() is false and constructing one throws. Knows NCCL and MPI, nothing about LoRA.
#pragma once

#include <cstddef>

#include "h2tune/comm/communicator.h"

namespace h2tune {

// Whether this build has the NCCL path.
bool nccl_available();

class NcclCommunicator {
public:
    // Collective over `group`: its rank 0 creates the NCCL id and broadcasts it over MPI; every
    // rank joins on `cuda_device`.
    NcclCommunicator(const Communicator& group, int cuda_device);
    ~NcclCommunicator();
    NcclCommunicator(const NcclCommunicator&) = delete;
    NcclCommunicator& operator=(const NcclCommunicator&) = delete;

    // In place: `count` floats on this rank's device become their sum over the group, identical
    // on every rank (NCCL's ring and tree all-reduces broadcast one reduced value). Enqueued on
    // `cuda_stream` (a cudaStream_t; null = the legacy default stream) and waited for.
    void allreduce_sum(float* device_values, size_t count, void* cuda_stream);

private:
    void* comm_ = nullptr;  // ncclComm_t, opaque so that this header needs no NCCL
    int device_ = 0;
};

}  // namespace h2tune
