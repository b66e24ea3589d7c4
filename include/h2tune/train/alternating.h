// Alternating task-knowledge disentanglement for one client:
//   joint step     - every parameter learns the task (round 0, or alternate = none)
//   shared step    - theta_p = {A, B} frozen; CE + lambda_prox KL(softmax(vec T_dl) || softmax(vec T));
//                    only theta_s = {D, Z} moves; the logits are kept as the teacher
//   specific step  - theta_s frozen (T fixed); CE + lambda_kd KL(teacher / t || student / t) over
//                    response tokens; only A and B move.
// Without a SharedMiddle (plain LoRA methods) only joint steps on {A, B} exist.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "h2tune/data/loader.h"
#include "h2tune/method/shared_middle.h"
#include "h2tune/train/adapted_model.h"
#include "h2tune/train/finetune.h"
#include "h2tune/train/gradient_sync.h"

namespace h2tune {

struct AlternatingOptions {
    FinetuneOptions specific;   // A, B
    FinetuneOptions residual;   // D
    FinetuneOptions relation;   // Z (align = relation)
    double lambda_prox = 0.1;
    double lambda_kd = 1.0;
    double kd_temperature = 2.0;
};

// KL(softmax(teacher / t) || softmax(student / t)) averaged over positions whose next-token label
// is kept (the response), logits [B, T, V], labels [B, T].
torch::Tensor distillation_kl(const torch::Tensor& teacher, const torch::Tensor& student, const torch::Tensor& labels,
                              double temperature);
// The same on logits already taken at the response rows only (ResponseLogits::logits, [N, V]):
// the mean over rows of KL(softmax(teacher / t) || softmax(student / t)).
torch::Tensor distillation_kl_rows(const torch::Tensor& teacher, const torch::Tensor& student, double temperature);

class AlternatingTrainer {
public:
    // `module_index[i]` is adapter i's index among the shared module types. `shared` may be null.
    AlternatingTrainer(AdaptedModel& adapted, SharedMiddle* shared, std::vector<int64_t> module_index,
                       const AlternatingOptions& options);

    double joint_step(const Batch& batch);                             // returns the CE loss
    // The steps compute the LM head only at the response rows (response_logits); `teacher` holds
    // the shared step's logits at those rows, [N, V], for the specific step on the same batch.
    double shared_step(const Batch& batch, torch::Tensor* teacher);    // returns the CE loss
    double specific_step(const Batch& batch, const torch::Tensor& teacher);
    // Sets every adapter's middle matrix from T values ([L_k, M, r^2]).
    void set_middles(const torch::Tensor& values);
    void fix_middles();  // T at its current value, without gradient (evaluation, after a round)

    // Data parallel over a group (train/gradient_sync.h): every step then trains on member
    // `member`'s part of the batch it is given, and the gradients are summed over the group before
    // the optimisers step; the steps return the whole batch's loss. Null: the whole batch here.
    void set_data_parallel(GradientSync* sync, int member, int members);

    AdapterTrainer& specific_trainer() { return *specific_; }
    // The optimisers' states under "specific/", "residual/" and "relation/" prefixes (checkpoints).
    std::map<std::string, torch::Tensor> state() const;
    void load_state(const std::map<std::string, torch::Tensor>& state);

private:
    BatchPart part_of(const Batch& batch) const { return batch_part(batch, member_, members_); }
    ResponseLogits response_of(const Batch& batch);  // the model's LM head at the batch's response rows
    // After a backward pass: the group's gradients of the trainers' parameters and its loss, the
    // sum of the members' `weighted_loss` (without a group: `weighted_loss` itself).
    double synchronise(const std::vector<AdapterTrainer*>& trainers, double weighted_loss);

    AdaptedModel& adapted_;
    SharedMiddle* shared_;
    std::vector<int64_t> module_index_;
    AlternatingOptions options_;
    std::unique_ptr<AdapterTrainer> specific_, residual_, relation_;
    GradientSync* sync_ = nullptr;
    int member_ = 0, members_ = 1;
};

}  // namespace h2tune
