#include "h2tune/train/finetune.h"

#include <torch/torch.h>

#include <cmath>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

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

ResponseRows response_rows(const torch::Tensor& labels) {
    const int64_t T = labels.size(1);
    const torch::Tensor next = labels.narrow(1, 1, T - 1);          // [B, T - 1]: the label position t predicts
    const torch::Tensor keep = next.ne(kIgnoreIndex);
    const torch::Tensor bt = keep.nonzero();                         // [N, 2] (b, t), row-major
    ResponseRows r;
    r.rows = bt.select(1, 0) * T + bt.select(1, 1);
    r.targets = next.masked_select(keep).to(torch::kInt64);
    return r;
}

namespace {
// A host tensor onto `device` without waiting for the device: a copy from pageable memory would
// first drain the stream, so it goes through pinned memory.
torch::Tensor to_device_async(const torch::Tensor& t, torch::Device device) {
    if (t.device() == device) return t;
    if (device.is_cuda() && t.is_cpu()) return t.pin_memory().to(device, /*non_blocking=*/true);
    return t.to(device);
}
}  // namespace

torch::Tensor gather_rows(const torch::Tensor& hidden, const ResponseRows& rows) {
    return hidden.reshape({-1, hidden.size(-1)}).index_select(0, to_device_async(rows.rows, hidden.device()));
}

ResponseLogits response_logits(LlamaForCausalLM& model, const torch::Tensor& hidden, const torch::Tensor& labels) {
    // Labels on the host (a GPU batch keeps a host copy) select the rows without a device
    // synchronisation: the GPU keeps its queue of kernels while the host goes on launching.
    const ResponseRows rows = response_rows(labels);
    return ResponseLogits{model->logits(gather_rows(hidden, rows)), to_device_async(rows.targets, hidden.device())};
}

torch::Tensor response_loss(const ResponseLogits& response) {
    return torch::nn::functional::cross_entropy(
        response.logits, response.targets,
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

namespace {
// LibTorch keys optimiser state by the parameter's TensorImpl: its address printed to a string
// (1.13 and early 2.x, as c10::guts::to_string does) or the pointer itself (later releases).
using StateMap = std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>;
template <class Key>
Key state_key_as(const torch::Tensor& p) {
    if constexpr (std::is_same_v<Key, std::string>) {
        std::ostringstream os;
        os << p.unsafeGetTensorImpl();
        return os.str();
    } else {
        return static_cast<Key>(p.unsafeGetTensorImpl());
    }
}
typename StateMap::key_type state_key(const torch::Tensor& p) { return state_key_as<typename StateMap::key_type>(p); }
}  // namespace

std::map<std::string, torch::Tensor> AdapterTrainer::state() const {
    std::map<std::string, torch::Tensor> out;
    out["step"] = torch::tensor(std::vector<int64_t>{step_}, torch::kInt64);
    auto& states = optimizer_->state();
    for (size_t i = 0; i < parameters_.size(); ++i) {
        auto it = states.find(state_key(parameters_[i]));
        if (it == states.end()) continue;
        const auto& s = static_cast<const torch::optim::AdamWParamState&>(*it->second);
        const std::string n = std::to_string(i);
        out["exp_avg/" + n] = s.exp_avg().detach().clone();
        out["exp_avg_sq/" + n] = s.exp_avg_sq().detach().clone();
        out["adam_step/" + n] = torch::tensor(std::vector<int64_t>{s.step()}, torch::kInt64);
    }
    return out;
}

void AdapterTrainer::clear_moments() {
    auto& states = optimizer_->state();
    for (const auto& p : parameters_) states.erase(state_key(p));
}

void AdapterTrainer::load_state(const std::map<std::string, torch::Tensor>& state) {
    auto step = state.find("step");
    if (step == state.end() || step->second.numel() != 1) throw ModelError("optimiser state: missing 'step'");
    auto& states = optimizer_->state();
    for (size_t i = 0; i < parameters_.size(); ++i) {
        const std::string n = std::to_string(i);
        auto m = state.find("exp_avg/" + n), v = state.find("exp_avg_sq/" + n), t = state.find("adam_step/" + n);
        states.erase(state_key(parameters_[i]));
        if (m == state.end() && v == state.end() && t == state.end()) continue;
        if (m == state.end() || v == state.end() || t == state.end())
            throw ModelError("optimiser state of parameter " + n + " is incomplete");
        if (!m->second.sizes().equals(parameters_[i].sizes()) || !v->second.sizes().equals(parameters_[i].sizes()))
            throw ModelError("optimiser state of parameter " + n + " has the wrong shape");
        auto s = std::make_unique<torch::optim::AdamWParamState>();
        s->step(t->second.to(torch::kInt64).item<int64_t>());
        s->exp_avg(m->second.to(parameters_[i].options()).clone());
        s->exp_avg_sq(v->second.to(parameters_[i].options()).clone());
        states[state_key(parameters_[i])] = std::move(s);
    }
    step_ = step->second.to(torch::kInt64).item<int64_t>();
}

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
