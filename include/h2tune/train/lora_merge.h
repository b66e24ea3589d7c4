// Folding a LoRA adapter into its base weight: W = W0 + B A, for exporting a fine-tuned model as
// a plain checkpoint that needs no adapter code.
#pragma once

#include <torch/types.h>

namespace h2tune {

// W0 [d_out, d_in] (any floating dtype), A [r, d_in], B [d_out, r] (the scale already folded into
// B, as in adapter files written by `h2tune train`). Computed in float32 on W0's device and
// rounded once to `dtype` (the base checkpoint's dtype). Throws ModelError for mismatched shapes.
torch::Tensor merge_lora_weight(const torch::Tensor& w0, const torch::Tensor& lora_A, const torch::Tensor& lora_B,
                                torch::Dtype dtype);

}  // namespace h2tune
