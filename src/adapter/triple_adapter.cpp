#include "h2tune/adapter/triple_adapter.h"

#include <torch/nn/init.h>

#include <cmath>

#include "h2tune/core/error.h"

namespace h2tune {

TripleAdapterImpl::TripleAdapterImpl(const TripleAdapterOptions& options_) : options(options_) { reset(); }

void TripleAdapterImpl::reset() {
    if (options.rank() < 1 || options.in_features() < 1 || options.out_features() < 1)
        throw ConfigError("adapter: rank and feature sizes must be positive (rank " + std::to_string(options.rank()) +
                          ")");
    lora_A = register_parameter("lora_A", torch::empty({options.rank(), options.in_features()}));
    lora_B = register_parameter("lora_B", torch::zeros({options.out_features(), options.rank()}));
    torch::NoGradGuard no_grad;
    // PEFT's initialisation: A like nn.Linear's default, B zero so the adapter starts as identity.
    torch::nn::init::kaiming_uniform_(lora_A, std::sqrt(5.0));
}

void TripleAdapterImpl::set_middle(torch::Tensor middle) {
    if (middle.defined() && (middle.dim() != 2 || middle.size(0) != options.rank() || middle.size(1) != options.rank()))
        throw ConfigError("adapter: middle matrix must be " + std::to_string(options.rank()) + " x " +
                          std::to_string(options.rank()));
    middle_ = std::move(middle);
}

torch::Tensor TripleAdapterImpl::delta(const torch::Tensor& x) {
    // x A^T: [..., r]; (T + I) applied as u + u T^T, so I is never materialised.
    torch::Tensor u = torch::matmul(x, lora_A.t());
    if (middle_.defined()) u = u + torch::matmul(u, middle_.t());
    return torch::matmul(u, lora_B.t()).mul(scale());
}

std::vector<torch::Tensor> TripleAdapterImpl::differentiable_tensors() const {
    std::vector<torch::Tensor> out;
    for (const torch::Tensor* t : {&lora_A, &lora_B, &middle_})
        if (t->defined() && t->requires_grad()) out.push_back(*t);
    return out;
}

std::pair<torch::Tensor, torch::Tensor> TripleAdapterImpl::peft_factors() const {
    torch::NoGradGuard no_grad;
    torch::Tensor b = lora_B.detach().clone();
    if (middle_.defined()) {
        torch::Tensor t_plus_i = middle_.detach() + torch::eye(options.rank(), middle_.options());
        b = torch::matmul(b, t_plus_i);
    }
    return {lora_A.detach().clone(), b.mul(scale())};
}

}  // namespace h2tune
