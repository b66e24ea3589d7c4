#include "h2tune/comm/nccl_communicator.h"

#include <cstring>
#include <string>

#include "h2tune/core/error.h"

#if H2TUNE_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace h2tune {

#if H2TUNE_WITH_NCCL

namespace {
void nccl_check(ncclResult_t code, const char* call) {
    if (code == ncclSuccess) return;
    throw CommError(std::string(call) + " failed: " + ncclGetErrorString(code));
}
void cuda_check(cudaError_t code, const char* call) {
    if (code == cudaSuccess) return;
    throw CommError(std::string(call) + " failed: " + cudaGetErrorString(code));
}
}  // namespace

bool nccl_available() { return true; }

NcclCommunicator::NcclCommunicator(const Communicator& group, int cuda_device) : device_(cuda_device) {
    ncclUniqueId id;
    Bytes message(sizeof id);
    if (group.rank() == 0) {
        nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
        std::memcpy(message.data(), &id, sizeof id);
    }
    group.broadcast(message, 0);
    if (message.size() != sizeof id) throw CommError("NCCL id of the wrong size from the group's rank 0");
    std::memcpy(&id, message.data(), sizeof id);
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    ncclComm_t comm = nullptr;
    nccl_check(ncclCommInitRank(&comm, group.size(), id, group.rank()), "ncclCommInitRank");
    comm_ = comm;
}

NcclCommunicator::~NcclCommunicator() {
    if (comm_) ncclCommDestroy(static_cast<ncclComm_t>(comm_));
}

void NcclCommunicator::allreduce_sum(float* device_values, size_t count, void* cuda_stream) {
    const auto stream = static_cast<cudaStream_t>(cuda_stream);
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    nccl_check(ncclAllReduce(device_values, device_values, count, ncclFloat, ncclSum, static_cast<ncclComm_t>(comm_), stream),
               "ncclAllReduce");
    cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

#else

bool nccl_available() { return false; }

NcclCommunicator::NcclCommunicator(const Communicator&, int) {
    throw CommError("this build of h2tune has no NCCL (it needs a CUDA LibTorch and NCCL's headers and library at "
                    "configure time; docs/gpu.md)");
}

NcclCommunicator::~NcclCommunicator() = default;

void NcclCommunicator::allreduce_sum(float*, size_t, void*) {
    throw CommError("this build of h2tune has no NCCL");
}

#endif

}  // namespace h2tune
