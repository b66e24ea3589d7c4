#include "h2tune/train/finetune.h"

#include <torch/torch.h>

#include <cmath>

#include "h2tune/core/error.h"

namespace h2tune {

torch::Tensor response_loss(const torch::Tensor& logits, const torch::Tensor& labels) {
    const int64_t V = logits.size(-1);
    torch::Tensor shifted_logits = logits.narrow(1, 0, logits.size(1) - 1).reshape({-1, V});
    torch::Tensor shifted_labels = labels.narrow(1, 1, labels.size(1) - 1).reshape({-1});
    return torch::nn::functional::cross_entropy(
        shifted_logits, shifted_labels,
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnoreIndex).reduction(torch::kMean));
}

double scheduled_lr(const ScheduleOptions& s, int64_t step) {
    if (s.warmup_steps > 0 && step < s.warmup_steps)
        return s.lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
    const int64_t decay_steps = std::max<int64_t>(1, s.total_steps - s.warmup_steps);
    const double progress = std::min(1.0, static_cast<double>(step - s.warmup_steps) / static_cast<double>(decay_steps));
    const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
    return s.lr * (s.min_lr_ratio + (1.0 - s.min_lr_ratio) * cosine);
}

AdapterTrainer::AdapterTrainer(std::vector<torch::Tensor> parameters, const FinetuneOptions& options)
    : parameters_(std::move(parameters)), options_(options) {
    if (parameters_.empty()) throw ConfigError("trainer: no trainable parameters");
    optimizer_ = std::make_unique<torch::optim::AdamW>(
        parameters_, torch::optim::AdamWOptions(options.schedule.lr).weight_decay(options.weight_decay));
}

AdapterTrainer::~AdapterTrainer() = default;

torch::optim::Optimizer& AdapterTrainer::optimizer() { return *optimizer_; }

double AdapterTrainer::step(const torch::Tensor& loss) {
    zero_grad();
    loss.backward();
    return apply();
}

void AdapterTrainer::zero_grad() { optimizer_->zero_grad(); }

double AdapterTrainer::apply() {
    const double lr = scheduled_lr(options_.schedule, step_);
    for (auto& group : optimizer_->param_groups())
        static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    if (options_.grad_clip > 0) torch::nn::utils::clip_grad_norm_(parameters_, options_.grad_clip);
    optimizer_->step();
    ++step_;
    return lr;
}

}  // namespace h2tune
