// Supervised fine-tuning of adapters on a frozen base: response-only causal-LM loss, AdamW,
// linear warm-up then cosine decay. Used by the `local` method and by every federated client.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "h2tune/data/loader.h"

namespace torch::optim {
class Optimizer;
}

namespace h2tune {

// Mean cross-entropy of the tokens whose label is not kIgnoreIndex, with the usual one-position
// shift (logits at t predict labels at t + 1). logits [B, T, V], labels [B, T].
torch::Tensor response_loss(const torch::Tensor& logits, const torch::Tensor& labels);

struct ScheduleOptions {
    double lr = 2e-4;
    int64_t total_steps = 1;
    int64_t warmup_steps = 0;
    double min_lr_ratio = 0.1;  // cosine decays to lr * min_lr_ratio
};
// Learning rate at `step` (0-based).
double scheduled_lr(const ScheduleOptions& s, int64_t step);

struct FinetuneOptions {
    ScheduleOptions schedule;
    double weight_decay = 0.0;
    double grad_clip = 1.0;  // max global L2 norm; 0 = off
};

struct StepStats {
    double loss = 0;
    int64_t tokens = 0;            // real tokens processed
    int64_t response_tokens = 0;
    double lr = 0;
};

// Owns the optimiser over a fixed parameter list and the global step counter.
class AdapterTrainer {
public:
    AdapterTrainer(std::vector<torch::Tensor> parameters, const FinetuneOptions& options);
    ~AdapterTrainer();

    // Sets the scheduled learning rate, clips, steps and zeroes gradients; `loss` must be a scalar
    // whose graph reaches the parameters.
    double step(const torch::Tensor& loss);
    // The same in two halves, for several trainers sharing one backward pass:
    // zero_grad(); loss.backward(); apply() on each.
    void zero_grad();
    double apply();
    int64_t global_step() const { return step_; }
    void set_global_step(int64_t s) { step_ = s; }
    // Everything needed to continue bit-identically: the global step and AdamW's moments and step
    // count per parameter ("step", "exp_avg/<i>", "exp_avg_sq/<i>", "adam_step/<i>"; parameters
    // that have not been stepped yet have no entries). Copies, so later steps do not change them.
    std::map<std::string, torch::Tensor> state() const;
    // Forgets AdamW's moments (a restarted LoRA); the global step, hence the schedule, goes on.
    void clear_moments();
    // Restores state(); throws ModelError when shapes do not match the parameters.
    void load_state(const std::map<std::string, torch::Tensor>& state);
    torch::optim::Optimizer& optimizer();

private:
    std::vector<torch::Tensor> parameters_;
    FinetuneOptions options_;
    std::unique_ptr<torch::optim::Optimizer> optimizer_;
    int64_t step_ = 0;
};

}  // namespace h2tune
