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

void AlternatingTrainer::set_data_parallel(GradientSync* sync, int member, int members) {
    if (sync && (members < 1 || member < 0 || member >= members))
        throw Error("data parallel: member " + std::to_string(member) + " of " + std::to_string(members));
    sync_ = sync;
    member_ = sync ? member : 0;
    members_ = sync ? members : 1;
}

ResponseLogits AlternatingTrainer::response_of(const Batch& b) {
    return response_logits(adapted_.model, adapted_.model->forward_hidden(b.input_ids, b.attention_mask), host_labels(b));
}

double AlternatingTrainer::synchronise(const std::vector<AdapterTrainer*>& trainers, double weighted_loss) {
    if (!sync_) return weighted_loss;
    std::vector<torch::Tensor> params;
    for (const AdapterTrainer* t : trainers)
        if (t)
            for (const auto& p : t->parameters())
                if (p.requires_grad()) params.push_back(p);
    std::vector<double> scalars{weighted_loss};
    sync_->sum(params, scalars);
    return scalars[0];
}

namespace {
// Backward of a member's loss scaled by its weight in the batch's mean (1: the whole batch here).
void backward_weighted(const torch::Tensor& loss, double weight) {
    if (weight == 1.0) loss.backward();
    else (loss * weight).backward();
}
}  // namespace

double AlternatingTrainer::joint_step(const Batch& batch) {
    const BatchPart part = part_of(batch);
    torch::Tensor values;
    if (shared_) {
        values = shared_->middle_values();
        set_middles(values);
    }
    specific_->zero_grad();
    if (residual_) residual_->zero_grad();
    if (relation_) relation_->zero_grad();
    double ce = 0;
    if (!part.empty) {
        torch::Tensor loss = response_loss(response_of(part.batch));
        backward_weighted(loss, part.weight);
        ce = loss.item<double>() * part.weight;
    }
    ce = synchronise({specific_.get(), residual_.get(), relation_.get()}, ce);
    if (shared_) shared_->accumulate_taylor(values);
    specific_->apply();
    if (residual_) residual_->apply();
    if (relation_) relation_->apply();
    return ce;
}

double AlternatingTrainer::shared_step(const Batch& batch, torch::Tensor* teacher) {
    if (!shared_) throw Error("shared step without shared parameters");
    const BatchPart part = part_of(batch);
    set_trainable(adapted_.adapter_parameters(), false);
    torch::Tensor values = shared_->middle_values();
    set_middles(values);
    residual_->zero_grad();
    if (relation_) relation_->zero_grad();
    double ce_value = 0;
    *teacher = torch::Tensor();
    if (!part.empty) {
        const ResponseLogits response = response_of(part.batch);
        torch::Tensor ce = response_loss(response);
        // The proximal term depends on the parameters only: weighted by every member's share, its
        // gradient is counted once in the group's sum.
        torch::Tensor loss = ce + options_.lambda_prox * shared_->proximal_kl(values);
        backward_weighted(loss, part.weight);
        ce_value = ce.item<double>() * part.weight;
        *teacher = response.logits.detach();
    }
    ce_value = synchronise({residual_.get(), relation_.get()}, ce_value);
    shared_->accumulate_taylor(values);
    residual_->apply();
    if (relation_) relation_->apply();
    set_trainable(adapted_.adapter_parameters(), true);
    return ce_value;
}

double AlternatingTrainer::specific_step(const Batch& batch, const torch::Tensor& teacher) {
    if (!shared_) throw Error("specific step without shared parameters");
    const BatchPart part = part_of(batch);
    fix_middles();  // T as the shared step left it; no gradient reaches D or Z
    specific_->zero_grad();
    double ce_value = 0;
    if (!part.empty) {
        const ResponseLogits response = response_of(part.batch);
        torch::Tensor ce = response_loss(response);
        torch::Tensor loss = ce + options_.lambda_kd * distillation_kl_rows(teacher, response.logits, options_.kd_temperature);
        backward_weighted(loss, part.weight);
        ce_value = ce.item<double>() * part.weight;
    }
    ce_value = synchronise({specific_.get()}, ce_value);
    specific_->apply();
    return ce_value;
}

}  // namespace h2tune
