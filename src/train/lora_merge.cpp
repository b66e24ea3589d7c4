#include "h2tune/train/lora_merge.h"

#include <torch/torch.h>

#include "h2tune/core/error.h"
#include "h2tune/core/shape_text.h"

namespace h2tune {

torch::Tensor merge_lora_weight(const torch::Tensor& w0, const torch::Tensor& lora_A, const torch::Tensor& lora_B,
                                torch::Dtype dtype) {
    if (w0.dim() != 2 || lora_A.dim() != 2 || lora_B.dim() != 2 || lora_A.size(1) != w0.size(1) ||
        lora_B.size(0) != w0.size(0) || lora_B.size(1) != lora_A.size(0))
        throw ModelError("LoRA merge: base weight " + shape_string(w0.sizes()) + ", lora_A " +
                         shape_string(lora_A.sizes()) + " and lora_B " + shape_string(lora_B.sizes()) +
                         " do not fit W0 + B A");
    torch::NoGradGuard no_grad;
    const torch::Device device = w0.device();
    const torch::Tensor delta = torch::matmul(lora_B.to(device, torch::kFloat32), lora_A.to(device, torch::kFloat32));
    return (w0.to(torch::kFloat32) + delta).to(dtype).contiguous();
}

}  // namespace h2tune
