#include "h2tune/app/client_runtime.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "h2tune/core/error.h"
#include "h2tune/core/rng.h"

namespace fs = std::filesystem;

namespace h2tune {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

ClientPaths resolve_client_paths(const ClientConfig& c) {
    ClientPaths p;
    p.model_dir = c.model_dir.empty() ? (fs::path("data/models") / c.model).string() : c.model_dir;
    p.tokenizer = c.tokenizer.empty() ? (fs::path(p.model_dir) / "tokenizer.json").string() : c.tokenizer;
    const fs::path task_dir = fs::path("data/tasks") / c.task;
    p.train_file = c.train_file.empty() ? (task_dir / "train.jsonl").string() : c.train_file;
    p.test_file = c.test_file.empty() ? (task_dir / "test.jsonl").string() : c.test_file;
    if (!c.task.empty()) p.task_file = (task_dir / "task.json").string();
    return p;
}

ClientRuntime::ClientRuntime(const JobConfig& job, int client_index, int64_t global_layers)
    : config_(job.clients.at(static_cast<size_t>(client_index))), federation_(job.federation) {
    const std::string key = "client." + std::to_string(client_index);
    paths_ = resolve_client_paths(config_);
    if (!fs::exists(fs::path(paths_.model_dir) / "config.json"))
        throw ModelError(key + ": no pretrained model in '" + paths_.model_dir +
                         "' (expected config.json and model.safetensors; run scripts/pretrain_models.sh "
                         "or set " + key + ".model_dir)");
    tokenizer_ = BpeTokenizer::from_file(paths_.tokenizer);

    LlamaForCausalLM model = load_pretrained(paths_.model_dir);
    if (model->config().vocab_size < tokenizer_.vocab_size())
        throw ModelError(key + ": tokenizer " + paths_.tokenizer + " has " + std::to_string(tokenizer_.vocab_size()) +
                         " tokens but the model's vocab_size is " + std::to_string(model->config().vocab_size));
    const uint64_t seed = job.run.seed;
    adapted_ = attach_adapters(model, federation_.modules, config_.effective_rank(federation_.max_rank),
                               federation_.alpha, stream_key(seed, 0xada, static_cast<uint64_t>(client_index)));

    auto train = read_jsonl(paths_.train_file, config_.train_examples);
    auto test = read_jsonl(paths_.test_file, config_.test_examples);
    std::vector<std::string> label_names;
    if (!config_.labels.empty()) {
        std::string item;
        for (char ch : config_.labels + ",") {
            if (ch == ',') {
                if (!item.empty()) label_names.push_back(item);
                item.clear();
            } else if (ch != ' ' || !item.empty()) {
                item += ch;
            }
        }
    } else if (!paths_.task_file.empty() && fs::exists(paths_.task_file)) {
        label_names = read_task_info(paths_.task_file).labels;
    }
    if (label_names.empty()) label_names = distinct_outputs(train);
    labels_ = make_label_set(label_names, tokenizer_);
    majority_rate_ = h2tune::majority_rate(test);

    auto train_encoded = encode_examples(train, tokenizer_, config_.max_seq_len, paths_.train_file);
    test_encoded_ = encode_examples(test, tokenizer_, config_.max_seq_len, paths_.test_file);
    for (const auto& e : test) test_references_.push_back(e.output);
    const int32_t pad = tokenizer_.pad_id() >= 0 ? tokenizer_.pad_id() : tokenizer_.eos_id();
    loader_ = std::make_unique<DataLoader>(std::move(train_encoded), config_.batch_size, pad, seed,
                                           static_cast<uint64_t>(client_index));

    steps_per_round_ = config_.local_steps > 0 ? config_.local_steps : loader_->batches_per_epoch() * config_.local_epochs;
    FinetuneOptions opt;
    opt.schedule.lr = config_.lr;
    opt.schedule.total_steps = steps_per_round_ * job.run.rounds;
    opt.schedule.warmup_steps = std::min<int64_t>(opt.schedule.total_steps / 20, 50);
    opt.weight_decay = config_.weight_decay;
    trainer_ = std::make_unique<AdapterTrainer>(adapted_.adapter_parameters(), opt);

    const std::string& method = job.run.method;
    if (method == "h2tune" || method == "h2tune-dense") {
        SharedMiddleOptions so;
        so.global_layers = global_layers > 0 ? global_layers : adapted_.model->num_layers();
        so.layers = adapted_.model->num_layers();
        so.modules = static_cast<int64_t>(federation_.modules.size());
        // h2tune-dense: every client reads and writes the whole R x R bank (no sparsification).
        so.rank = method == "h2tune-dense" ? federation_.max_rank : adapted_.rank;
        so.max_rank = federation_.max_rank;
        so.mask = method == "h2tune-dense" ? "block" : federation_.mask;
        so.align = federation_.align;
        so.tau = federation_.relation_tau;
        so.sigma = federation_.relation_sigma;
        so.mask_key = stream_key(seed, 0x3a5c, static_cast<uint64_t>(client_index));
        if (so.rank != adapted_.rank)
            throw ConfigError("client." + std::to_string(client_index) +
                              ": h2tune-dense needs rank = federation.max_rank for every client");
        shared_ = std::make_unique<SharedMiddle>(so);
        for (const auto& type : adapted_.module_types) {
            auto it = std::find(federation_.modules.begin(), federation_.modules.end(), type);
            adapter_module_index_.push_back(static_cast<int64_t>(it - federation_.modules.begin()));
        }
        FinetuneOptions shared_opt = opt;
        shared_opt.weight_decay = 0.0;  // D restarts at zero every round; Z is a distribution's logits
        trainer_residual_ = std::make_unique<AdapterTrainer>(std::vector<torch::Tensor>{shared_->residual()}, shared_opt);
        if (federation_.align == "relation") {
            FinetuneOptions rel_opt = shared_opt;
            rel_opt.schedule.lr = federation_.relation_lr;
            trainer_relation_ =
                std::make_unique<AdapterTrainer>(std::vector<torch::Tensor>{shared_->relation_logits()}, rel_opt);
        }
        set_middles(shared_->downloaded_values());
    } else if (method != "local") {
        throw ConfigError("run.method = '" + method + "' is not implemented in this version (available: local, h2tune, "
                          "h2tune-dense)");
    }
}

void ClientRuntime::receive_slices(const torch::Tensor& slices) {
    if (!shared_) throw Error("receive_slices: client does not share middle matrices");
    shared_->begin_round(slices);
}

ClientUploadValues ClientRuntime::upload_values() const {
    torch::NoGradGuard no_grad;
    ClientUploadValues u;
    u.masks = shared_->masks();
    u.relation = shared_->relation().detach().contiguous();
    u.values = shared_->middle_values().detach().contiguous();
    u.samples = static_cast<double>(loader_->size());
    return u;
}

void ClientRuntime::set_middles(const torch::Tensor& values) {
    for (size_t i = 0; i < adapted_.adapters.size(); ++i)
        adapted_.adapters[i]->set_middle(shared_->middle_matrix(values, adapted_.layers[i], adapter_module_index_[i]));
}

void ClientRuntime::step_shared_trainers() {
    trainer_residual_->apply();
    if (trainer_relation_) trainer_relation_->apply();
}

namespace {

void set_trainable(const std::vector<torch::Tensor>& params, bool on) {
    for (auto p : params) p.set_requires_grad(on);
}

// KL(softmax(teacher / t) || softmax(student / t)) averaged over the response positions (the
// positions whose next-token label is kept), as in section 1.3 (b).
torch::Tensor distillation_kl(const torch::Tensor& teacher, const torch::Tensor& student, const torch::Tensor& labels,
                              double t) {
    const int64_t V = student.size(-1);
    torch::Tensor keep = labels.narrow(1, 1, labels.size(1) - 1).ne(kIgnoreIndex).reshape({-1});
    torch::Tensor idx = keep.nonzero().reshape({-1});
    torch::Tensor s = student.narrow(1, 0, student.size(1) - 1).reshape({-1, V}).index_select(0, idx);
    torch::Tensor te = teacher.narrow(1, 0, teacher.size(1) - 1).reshape({-1, V}).index_select(0, idx);
    torch::Tensor p = torch::softmax(te / t, -1);
    return (p * (torch::log_softmax(te / t, -1) - torch::log_softmax(s / t, -1))).sum(-1).mean();
}

}  // namespace

double ClientRuntime::joint_step(const Batch& batch) {
    torch::Tensor values;
    if (shared_) {
        values = shared_->middle_values();
        set_middles(values);
    }
    torch::Tensor loss = response_loss(adapted_.model->forward(batch.input_ids, batch.attention_mask), batch.labels);
    trainer_->zero_grad();
    if (shared_) {
        trainer_residual_->zero_grad();
        if (trainer_relation_) trainer_relation_->zero_grad();
    }
    loss.backward();
    trainer_->apply();
    if (shared_) step_shared_trainers();
    return loss.item<double>();
}

double ClientRuntime::shared_step(const Batch& batch, torch::Tensor* logits_out) {
    // (a) theta_p frozen: only D and Z move, pulled towards the downloaded T by the proximal term.
    set_trainable(adapted_.adapter_parameters(), false);
    torch::Tensor values = shared_->middle_values();
    set_middles(values);
    torch::Tensor logits = adapted_.model->forward(batch.input_ids, batch.attention_mask);
    torch::Tensor ce = response_loss(logits, batch.labels);
    torch::Tensor loss = ce + federation_.lambda_prox * shared_->proximal_kl(values);
    trainer_residual_->zero_grad();
    if (trainer_relation_) trainer_relation_->zero_grad();
    loss.backward();
    step_shared_trainers();
    set_trainable(adapted_.adapter_parameters(), true);
    *logits_out = logits.detach();
    return ce.item<double>();
}

double ClientRuntime::specific_step(const Batch& batch, const torch::Tensor& teacher_logits) {
    // (b) theta_s frozen: T is fixed at its value after (a); A and B learn the task and distil
    // the shared step's predictions.
    set_middles(shared_->middle_values().detach());
    torch::Tensor logits = adapted_.model->forward(batch.input_ids, batch.attention_mask);
    torch::Tensor ce = response_loss(logits, batch.labels);
    torch::Tensor loss = ce + federation_.lambda_kd *
                                  distillation_kl(teacher_logits, logits, batch.labels, federation_.kd_temperature);
    trainer_->step(loss);
    return ce.item<double>();
}

int64_t ClientRuntime::trainable_parameters() const {
    int64_t n = 0;
    for (const auto& p : adapted_.adapter_parameters()) n += p.numel();
    return n;
}

ClientRoundMetrics ClientRuntime::train_round(int round) {
    ClientRoundMetrics m;
    auto t0 = std::chrono::steady_clock::now();
    adapted_.model->train();
    const bool alternate = shared_ && round > 0 && federation_.alternate != "none";
    double loss_sum = 0;
    if (!alternate) {
        for (int64_t s = 0; s < steps_per_round_; ++s) {
            Batch batch = loader_->next();
            loss_sum += joint_step(batch);
            m.tokens += static_cast<double>(batch.tokens);
        }
    } else if (federation_.alternate == "step") {
        for (int64_t s = 0; s < steps_per_round_; ++s) {
            Batch batch = loader_->next();
            torch::Tensor teacher;
            shared_step(batch, &teacher);
            loss_sum += specific_step(batch, teacher);
            m.tokens += static_cast<double>(batch.tokens);
        }
    } else {  // epoch: all shared steps, then the specific steps over the same batches
        const DataLoader::Position start = loader_->position();
        std::vector<torch::Tensor> teachers;
        for (int64_t s = 0; s < steps_per_round_; ++s) {
            Batch batch = loader_->next();
            torch::Tensor teacher;
            shared_step(batch, &teacher);
            teachers.push_back(teacher);
        }
        loader_->set_position(start);
        for (int64_t s = 0; s < steps_per_round_; ++s) {
            Batch batch = loader_->next();
            loss_sum += specific_step(batch, teachers[static_cast<size_t>(s)]);
            m.tokens += static_cast<double>(batch.tokens);
        }
    }
    if (shared_) set_middles(shared_->middle_values().detach());
    m.steps = static_cast<double>(steps_per_round_);
    m.train_loss = steps_per_round_ ? loss_sum / static_cast<double>(steps_per_round_) : 0.0;
    m.train_seconds = seconds_since(t0);
    return m;
}

void ClientRuntime::evaluate(ClientRoundMetrics& m) {
    auto t0 = std::chrono::steady_clock::now();
    EvalOptions opt;
    opt.generate = federation_.eval_generate;
    opt.limit = federation_.eval_examples;
    EvalResult r = evaluate_classification(adapted_.model, tokenizer_, test_encoded_, test_references_, labels_, opt);
    m.test_accuracy = r.accuracy;
    m.test_accuracy_generate = r.accuracy_generate;
    m.eval_seconds = seconds_since(t0);
}

}  // namespace h2tune
