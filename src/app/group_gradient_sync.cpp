#include "h2tune/app/group_gradient_sync.h"

#include <torch/torch.h>

#if H2TUNE_WITH_NCCL
#include <c10/cuda/CUDAStream.h>
#endif

#include "h2tune/core/error.h"

namespace h2tune {

namespace {

// The exchanged buffer, per member: one flag per parameter (1: its gradient is defined here),
// each scalar as two floats (high and low part, so the host path sums them in double), the stop
// flag, then every parameter's gradient, flattened, in order.
struct SyncLayout {
    size_t parameters = 0, scalars = 0;
    int64_t gradient_values = 0;
    size_t stop_at() const { return parameters + 2 * scalars; }
    size_t head() const { return stop_at() + 1; }
    size_t size() const { return head() + static_cast<size_t>(gradient_values); }
};

SyncLayout layout_of(const std::vector<torch::Tensor>& parameters, const std::vector<double>& scalars) {
    SyncLayout l;
    l.parameters = parameters.size();
    l.scalars = scalars.size();
    for (const auto& p : parameters) l.gradient_values += p.numel();
    return l;
}

void write_head(float* head, const SyncLayout& l, const std::vector<torch::Tensor>& parameters,
                const std::vector<double>& scalars, bool stop) {
    for (size_t i = 0; i < l.parameters; ++i) head[i] = parameters[i].grad().defined() ? 1.0f : 0.0f;
    for (size_t i = 0; i < l.scalars; ++i) {
        const auto high = static_cast<float>(scalars[i]);
        head[l.parameters + 2 * i] = high;
        head[l.parameters + 2 * i + 1] = static_cast<float>(scalars[i] - static_cast<double>(high));
    }
    head[l.stop_at()] = stop ? 1.0f : 0.0f;
}

// Gradients from the summed flat buffer (any device): set where some member defined one.
void read_gradients(const torch::Tensor& summed, const float* flags, const std::vector<torch::Tensor>& parameters,
                    size_t head) {
    int64_t offset = static_cast<int64_t>(head);
    for (size_t i = 0; i < parameters.size(); ++i) {
        torch::Tensor p = parameters[i];
        const int64_t n = p.numel();
        if (flags[i] > 0) {
            torch::Tensor values = summed.narrow(0, offset, n).view(p.sizes());
            if (p.grad().defined()) p.mutable_grad().copy_(values);
            else p.mutable_grad() = values.to(p.device(), p.scalar_type()).clone();
        }
        offset += n;
    }
}

// Every defined gradient into its slot of the flat buffer (any device), after the head.
void write_gradients(torch::Tensor& flat, const std::vector<torch::Tensor>& parameters, size_t head) {
    int64_t offset = static_cast<int64_t>(head);
    for (const auto& p : parameters) {
        if (p.grad().defined()) flat.narrow(0, offset, p.numel()).copy_(p.grad().reshape(-1));
        offset += p.numel();
    }
}

}  // namespace

GroupGradientSync::GroupGradientSync(const Communicator& group, const volatile std::sig_atomic_t* stop, torch::Device device)
    : group_(group), stop_(stop), device_(device) {
    if (device.is_cuda() && nccl_available()) nccl_ = std::make_unique<NcclCommunicator>(group, device.index());
}

void GroupGradientSync::sum(const std::vector<torch::Tensor>& parameters, std::vector<double>& scalars) {
    torch::NoGradGuard no_grad;
    for (const auto& p : parameters)
        if (p.scalar_type() != torch::kFloat32)
            throw Error("data-parallel gradient sum: parameters must be float32 (adapters and shared state are)");
    if (nccl_) sum_with_nccl(parameters, scalars);
    else sum_on_host(parameters, scalars);
}

void GroupGradientSync::sum_on_host(const std::vector<torch::Tensor>& parameters, std::vector<double>& scalars) {
    const SyncLayout l = layout_of(parameters, scalars);
    std::vector<float> mine(l.size(), 0.0f);
    write_head(mine.data(), l, parameters, scalars, stop_ && *stop_ != 0);
    torch::Tensor flat = torch::from_blob(mine.data(), {static_cast<int64_t>(mine.size())}, torch::kFloat32);
    write_gradients(flat, parameters, l.head());
    std::vector<float> all = group_.allgather(mine);
    const auto members = static_cast<int64_t>(group_.size()), n = static_cast<int64_t>(l.size());
    torch::Tensor parts = torch::from_blob(all.data(), {members, n}, torch::kFloat32);
    // Member order, element by element: the same additions on every member.
    torch::Tensor summed = parts[0].clone();
    for (int64_t m = 1; m < members; ++m) summed.add_(parts[m]);
    const float* head = summed.data_ptr<float>();
    for (size_t i = 0; i < l.scalars; ++i) {
        double total = 0;
        for (int64_t m = 0; m < members; ++m) {
            const float* part = all.data() + static_cast<size_t>(m * n);
            total += static_cast<double>(part[l.parameters + 2 * i]) + static_cast<double>(part[l.parameters + 2 * i + 1]);
        }
        scalars[i] = total;
    }
    stop_seen_ = head[l.stop_at()] > 0;
    read_gradients(summed, head, parameters, l.head());
}

void GroupGradientSync::sum_with_nccl(const std::vector<torch::Tensor>& parameters, std::vector<double>& scalars) {
#if H2TUNE_WITH_NCCL
    const SyncLayout l = layout_of(parameters, scalars);
    std::vector<float> head(l.head());
    write_head(head.data(), l, parameters, scalars, stop_ && *stop_ != 0);
    torch::Tensor flat = torch::zeros({static_cast<int64_t>(l.size())}, torch::TensorOptions().dtype(torch::kFloat32).device(device_));
    flat.narrow(0, 0, static_cast<int64_t>(l.head()))
        .copy_(torch::from_blob(head.data(), {static_cast<int64_t>(l.head())}, torch::kFloat32));
    write_gradients(flat, parameters, l.head());
    nccl_->allreduce_sum(flat.data_ptr<float>(), static_cast<size_t>(flat.numel()),
                         c10::cuda::getCurrentCUDAStream(device_.index()).stream());
    torch::Tensor summed_head = flat.narrow(0, 0, static_cast<int64_t>(l.head())).cpu();
    const float* summed = summed_head.data_ptr<float>();
    for (size_t i = 0; i < l.scalars; ++i)
        scalars[i] = static_cast<double>(summed[l.parameters + 2 * i]) + static_cast<double>(summed[l.parameters + 2 * i + 1]);
    stop_seen_ = summed[l.stop_at()] > 0;
    read_gradients(flat, summed, parameters, l.head());
#else
    (void)parameters;
    (void)scalars;
    throw CommError("this build of h2tune has no NCCL");
#endif
}

}  // namespace h2tune
