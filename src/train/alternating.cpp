#include "h2tune/train/alternating.h"

#include <torch/torch.h>

#include "h2tune/core/error.h"

namespace h2tune {

namespace {
void set_trainable(const std::vector<torch::Tensor>& params, bool on) {
    for (auto p : params) p.set_requires_grad(on);
}

// The labels to select response rows from: the host copy of a GPU batch when there is one.
const torch::Tensor& host_labels(const Batch& batch) {
    return batch.labels_host.defined() ? batch.labels_host : batch.labels;
}
}  // namespace

torch::Tensor distillation_kl_rows(const torch::Tensor& teacher, const torch::Tensor& student, double temperature) {
    torch::Tensor log_p = torch::log_softmax(teacher / temperature, -1);
    return (log_p.exp() * (log_p - torch::log_softmax(student / temperature, -1))).sum(-1).mean();
}

torch::Tensor distillation_kl(const torch::Tensor& teacher, const torch::Tensor& student, const torch::Tensor& labels,
                              double temperature) {
    const ResponseRows rows = response_rows(labels);
    return distillation_kl_rows(gather_rows(teacher, rows), gather_rows(student, rows), temperature);
}

AlternatingTrainer::AlternatingTrainer(AdaptedModel& adapted, SharedMiddle* shared, std::vector<int64_t> module_index,
                                       const AlternatingOptions& options)
    : adapted_(adapted), shared_(shared), module_index_(std::move(module_index)), options_(options) {
    specific_ = std::make_unique<AdapterTrainer>(adapted_.adapter_parameters(), options_.specific);
    if (!shared_) return;
    if (module_index_.size() != adapted_.adapters.size())
        throw ConfigError("alternating trainer: one module index per adapter is required");
    residual_ = std::make_unique<AdapterTrainer>(std::vector<torch::Tensor>{shared_->residual()}, options_.residual);
    if (shared_->options().align == "relation")
        relation_ = std::make_unique<AdapterTrainer>(std::vector<torch::Tensor>{shared_->relation_logits()},
                                                     options_.relation);
    fix_middles();
}

void AlternatingTrainer::set_middles(const torch::Tensor& values) {
    for (size_t i = 0; i < adapted_.adapters.size(); ++i)
        adapted_.adapters[i]->set_middle(shared_->middle_matrix(values, adapted_.layers[i], module_index_[i]));
}

void AlternatingTrainer::fix_middles() {
    if (shared_) set_middles(shared_->middle_values().detach());
}

namespace {
const char* const kTrainerNames[] = {"specific/", "residual/", "relation/"};
}

std::map<std::string, torch::Tensor> AlternatingTrainer::state() const {
    std::map<std::string, torch::Tensor> out;
    const AdapterTrainer* trainers[] = {specific_.get(), residual_.get(), relation_.get()};
    for (size_t t = 0; t < 3; ++t) {
        if (!trainers[t]) continue;
        for (auto& [key, value] : trainers[t]->state()) out[kTrainerNames[t] + key] = value;
    }
    return out;
}

void AlternatingTrainer::load_state(const std::map<std::string, torch::Tensor>& state) {
    AdapterTrainer* trainers[] = {specific_.get(), residual_.get(), relation_.get()};
    for (size_t t = 0; t < 3; ++t) {
        if (!trainers[t]) continue;
        const std::string prefix = kTrainerNames[t];
        std::map<std::string, torch::Tensor> part;
        for (auto it = state.lower_bound(prefix); it != state.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
            part[it->first.substr(prefix.size())] = it->second;
        trainers[t]->load_state(part);
    }
}

double AlternatingTrainer::joint_step(const Batch& batch) {
    torch::Tensor values;
    if (shared_) {
        values = shared_->middle_values();
        set_middles(values);
    }
    torch::Tensor loss = response_loss(
        response_logits(adapted_.model, adapted_.model->forward_hidden(batch.input_ids, batch.attention_mask), host_labels(batch)));
    specific_->zero_grad();
    if (residual_) residual_->zero_grad();
    if (relation_) relation_->zero_grad();
    loss.backward();
    if (shared_) shared_->accumulate_taylor(values);
    specific_->apply();
    if (residual_) residual_->apply();
    if (relation_) relation_->apply();
    return loss.item<double>();
}

double AlternatingTrainer::shared_step(const Batch& batch, torch::Tensor* teacher) {
    if (!shared_) throw Error("shared step without shared parameters");
    set_trainable(adapted_.adapter_parameters(), false);
    torch::Tensor values = shared_->middle_values();
    set_middles(values);
    const ResponseLogits response =
        response_logits(adapted_.model, adapted_.model->forward_hidden(batch.input_ids, batch.attention_mask), host_labels(batch));
    torch::Tensor ce = response_loss(response);
    torch::Tensor loss = ce + options_.lambda_prox * shared_->proximal_kl(values);
    residual_->zero_grad();
    if (relation_) relation_->zero_grad();
    loss.backward();
    shared_->accumulate_taylor(values);
    residual_->apply();
    if (relation_) relation_->apply();
    set_trainable(adapted_.adapter_parameters(), true);
    *teacher = response.logits.detach();
    return ce.item<double>();
}

double AlternatingTrainer::specific_step(const Batch& batch, const torch::Tensor& teacher) {
    if (!shared_) throw Error("specific step without shared parameters");
    fix_middles();  // T as the shared step left it; no gradient reaches D or Z
    const ResponseLogits response =
        response_logits(adapted_.model, adapted_.model->forward_hidden(batch.input_ids, batch.attention_mask), host_labels(batch));
    torch::Tensor ce = response_loss(response);
    torch::Tensor loss = ce + options_.lambda_kd * distillation_kl_rows(teacher, response.logits, options_.kd_temperature);
    specific_->step(loss);
    return ce.item<double>();
}

}  // namespace h2tune
