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
#include "h2tune/model/llama.h"

namespace torch::optim {
class Optimizer;
}

namespace h2tune {

// Mean cross-entropy of the tokens whose label is not kIgnoreIndex, with the usual one-position
// shift (logits at t predict labels at t + 1). logits [B, T, V], labels [B, T].
torch::Tensor response_loss(const torch::Tensor& logits, const torch::Tensor& labels);

// The same loss without the LM head at positions nobody reads. A response row is a position t of
// sequence b whose next-token label labels[b][t + 1] is kept; rows are in (b, t) order, the order
// response_loss visits them. On a typical batch a quarter of the positions are rows, and the head
// ([B, T, hidden] x [hidden, V] and a log-softmax over V) was the largest single cost of a step.
struct ResponseRows {
    torch::Tensor rows;     // int64 [N]: b * T + t, ascending
    torch::Tensor targets;  // int64 [N]: labels[b][t + 1]
};
ResponseRows response_rows(const torch::Tensor& labels);  // labels [B, T]

// hidden [B, T, H] (LlamaForCausalLM::forward_hidden) -> its rows [N, H].
torch::Tensor gather_rows(const torch::Tensor& hidden, const ResponseRows& rows);

// The LM head at the response rows: logits [N, V] and their targets.
struct ResponseLogits {
    torch::Tensor logits;   // [N, V]
    torch::Tensor targets;  // int64 [N]
};
ResponseLogits response_logits(LlamaForCausalLM& model, const torch::Tensor& hidden, const torch::Tensor& labels);

// Mean cross-entropy over the rows: response_loss(model->forward(ids, mask), labels) equals
// response_loss(response_logits(model, model->forward_hidden(ids, mask), labels)) up to rounding
// (the same numbers, summed in a different grouping). NaN when there is no row, as response_loss.
torch::Tensor response_loss(const ResponseLogits& response);

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
    const std::vector<torch::Tensor>& parameters() const { return parameters_; }

private:
    std::vector<torch::Tensor> parameters_;
    FinetuneOptions options_;
    std::unique_ptr<torch::optim::Optimizer> optimizer_;
    int64_t step_ = 0;
};

}  // namespace h2tune
