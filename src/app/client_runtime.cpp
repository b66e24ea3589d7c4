#include "h2tune/app/client_runtime.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <set>
#include <sstream>

#include "h2tune/core/error.h"
#include "h2tune/core/fnv1a.h"
#include "h2tune/core/rng.h"
#include "h2tune/io/file_fingerprint.h"
#include "h2tune/method/sparse_bank.h"

namespace fs = std::filesystem;

namespace h2tune {

namespace {
Batch to_device(Batch b, torch::Device device) {
    if (device.is_cpu()) return b;
    b.labels_host = b.labels;  // row selection on the host, no device sync (train/finetune.h)
    b.input_ids = b.input_ids.to(device, /*non_blocking=*/true);
    b.attention_mask = b.attention_mask.to(device, true);
    b.labels = b.labels.to(device, true);
    return b;
}

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

std::string lora_group_signature(const LlamaConfig& c, const std::vector<std::string>& modules, int64_t rank,
                                 const MethodSpec& method) {
    std::ostringstream s;
    s << "h" << c.hidden_size << "-i" << c.intermediate_size << "-l" << c.num_hidden_layers << "-a"
      << c.num_attention_heads << "-kv" << c.num_key_value_heads << "-v" << c.vocab_size;
    // An explicit head_dim changes q/k/v/o shapes, and another family is another architecture
    // even at equal shapes; both are written only when present, so that signatures (and the
    // adapter seeds hashed from them) of the built-in Llama-style models stay what they were.
    if (c.head_dim() * c.num_attention_heads != c.hidden_size) s << "-d" << c.head_dim();
    if (c.model_type != "llama") s << "-" << c.model_type;
    s << "-m";
    for (const auto& m : modules) s << m << ",";
    if (method.lora.groups_by_rank) s << "-r" << rank;
    return s.str();
}

ClientRuntime::ClientRuntime(const JobConfig& job, int client_index, int64_t global_layers, torch::Device device,
                             BaseModelPool* pool)
    : config_(job.clients.at(static_cast<size_t>(client_index))),
      federation_(job.federation),
      method_(method_spec(job.run.method)),
      device_(device) {
    paths_ = resolve_client_paths(config_);
    seed_ = job.run.seed;
    load_model(job.run.share_base_models ? pool : nullptr);
    load_data();
    build_trainer(job, global_layers);
}

// The tokenizer, the frozen base in its dtype on the device, and the adapters.
void ClientRuntime::load_model(BaseModelPool* pool) {
    const std::string key = "client." + std::to_string(config_.index);
    if (!fs::exists(fs::path(paths_.model_dir) / "config.json"))
        throw ModelError(key + ": no pretrained model in '" + paths_.model_dir +
                         "' (expected config.json and model.safetensors; run scripts/pretrain_models.sh "
                         "or set " + key + ".model_dir)");
    // FLoRA adds its merged stacks to W0, so its clients cannot share a base.
    if (method_.lora.merge) pool = nullptr;
    tokenizer_ = pool ? pool->tokenizer(paths_.tokenizer)
                      : std::make_shared<const BpeTokenizer>(BpeTokenizer::from_file(paths_.tokenizer));

    const torch::Dtype base_dtype = model_dtype_from_name(config_.model_dtype, key + ".model_dtype");
    // LibTorch's CPU kernels lack float16 matmuls (1.13 has no addmm/bmm for Half on the CPU).
    if (base_dtype == torch::kFloat16 && device_.is_cpu())
        throw ConfigError(key + ".model_dtype: float16 needs a CUDA device (this rank computes on the CPU); "
                          "use bfloat16 or float32");
    LlamaForCausalLM model{nullptr};
    if (pool) {
        PooledModel pooled = pool->model(paths_.model_dir, paths_.tokenizer, base_dtype, device_);
        model = pooled.model;
        base_model_fingerprint_ = pooled.fingerprint;
        shares_base_ = true;
    } else {
        model = load_pretrained(paths_.model_dir, base_dtype);
        base_model_fingerprint_ = model_fingerprint(paths_.model_dir, paths_.tokenizer);
    }
    if (model->config().vocab_size < tokenizer_->vocab_size())
        throw ModelError(key + ": tokenizer " + paths_.tokenizer + " has " + std::to_string(tokenizer_->vocab_size()) +
                         " tokens but the model's vocab_size is " + std::to_string(model->config().vocab_size));
    if (config_.max_seq_len > model->config().max_position_embeddings)
        throw ConfigError(key + ".max_seq_len: " + std::to_string(config_.max_seq_len) +
                          " exceeds max_position_embeddings " + std::to_string(model->config().max_position_embeddings) +
                          " of " + paths_.model_dir + "/config.json");
    const int64_t rank = config_.effective_rank(federation_.max_rank);
    uint64_t init_key = stream_key(seed_, 0xada, static_cast<uint64_t>(config_.index));
    lora_ = method_.family == MethodFamily::kLoraBaseline;
    if (lora_) {
        // Clients that aggregate together start from the same adapter (FedAvg's common initial
        // model; FFA-LoRA's shared frozen A): the key comes from the group signature.
        lora_signature_ = lora_group_signature(model->config(), federation_.modules, rank, method_);
        Fnv1a64 signature_hash;
        signature_hash.add(lora_signature_.data(), lora_signature_.size());
        init_key = stream_key(seed_, 0xada5, signature_hash.value);
    }
    if (!pool) model->to(device_);
    adapted_ = attach_adapters(model, federation_.modules, rank, federation_.alpha, init_key, device_);
    if (lora_ && method_.lora.freeze_A)
        for (auto& a : adapted_.adapters) a->lora_A.set_requires_grad(false);
}

namespace {

// A given label set must be a set and cover the data: a label listed twice, or an output outside
// the set (a typo, another task's file), would make accuracy count something else than it says.
void check_label_set(const std::vector<std::string>& labels, const std::string& source,
                     const std::vector<Example>& examples, const std::string& data_file) {
    std::set<std::string> seen;
    for (const auto& l : labels)
        if (!seen.insert(l).second) throw DataError(source + ": label '" + l + "' is listed twice");
    std::string listed;
    for (const auto& l : labels) listed += (listed.empty() ? "" : ", ") + l;
    for (const auto& e : examples)
        if (!seen.count(e.output))
            throw DataError(error_at(data_file, e.line, "output '" + e.output.substr(0, 80) + "' is not in the label set (" +
                                                            source + ": " + listed.substr(0, 200) + ")"));
}

}  // namespace

// Training split (sharded and capped), test split, label set, encoded examples and the loader.
void ClientRuntime::load_data() {
    const auto [shard, shards] = config_.shard_of();
    auto train = read_jsonl(paths_.train_file, shards > 1 ? 0 : config_.train_examples, "training file");
    if (shards > 1) {  // a disjoint split: every shards-th example, then the cap
        std::vector<Example> mine;
        for (size_t i = static_cast<size_t>(shard); i < train.size(); i += static_cast<size_t>(shards)) mine.push_back(train[i]);
        if (config_.train_examples > 0 && static_cast<int64_t>(mine.size()) > config_.train_examples)
            mine.resize(static_cast<size_t>(config_.train_examples));
        if (mine.empty()) throw DataError(paths_.train_file + ": shard " + config_.shard + " holds no examples");
        train = std::move(mine);
    }
    auto test = read_jsonl(paths_.test_file, config_.test_examples, "test file");
    std::vector<std::string> label_names;
    std::string label_source;
    if (!config_.labels.empty()) {
        label_names = split_labels(config_.labels);
        label_source = "client." + std::to_string(config_.index) + ".labels";
    } else if (!paths_.task_file.empty() && fs::exists(paths_.task_file)) {
        label_names = read_task_info(paths_.task_file).labels;
        label_source = paths_.task_file;
    }
    if (label_names.empty()) {
        label_names = distinct_outputs(train);
    } else {
        check_label_set(label_names, label_source, train, paths_.train_file);
        check_label_set(label_names, label_source, test, paths_.test_file);
    }
    labels_ = make_label_set(label_names, *tokenizer_);
    // The majority rate of exactly the examples evaluated each round (eval_examples may cap them).
    std::vector<Example> evaluated = test;
    if (federation_.eval_examples > 0 && static_cast<size_t>(federation_.eval_examples) < evaluated.size())
        evaluated.resize(static_cast<size_t>(federation_.eval_examples));
    majority_rate_ = h2tune::majority_rate(evaluated);

    auto train_encoded = encode_examples(train, *tokenizer_, config_.max_seq_len, paths_.train_file);
    test_encoded_ = encode_examples(test, *tokenizer_, config_.max_seq_len, paths_.test_file);
    for (const auto& e : test) test_references_.push_back(e.output);
    const int32_t pad = tokenizer_->pad_id() >= 0 ? tokenizer_->pad_id() : tokenizer_->eos_id();
    loader_ = std::make_unique<DataLoader>(std::move(train_encoded), config_.batch_size, pad, seed_,
                                           static_cast<uint64_t>(config_.index));
}

// The optimiser schedule, the shared middle state (H2Tune methods) and the alternating trainer.
void ClientRuntime::build_trainer(const JobConfig& job, int64_t global_layers) {
    steps_per_round_ = config_.local_steps > 0 ? config_.local_steps : loader_->batches_per_epoch() * config_.local_epochs;
    AlternatingOptions opt;
    opt.specific.schedule.lr = config_.lr;
    opt.specific.schedule.total_steps = steps_per_round_ * job.run.rounds;
    opt.specific.schedule.warmup_steps = std::min<int64_t>(opt.specific.schedule.total_steps / 20, 50);
    opt.specific.weight_decay = config_.weight_decay;
    opt.residual = opt.specific;
    opt.residual.weight_decay = 0.0;  // D restarts at zero every round; Z parameterises a softmax
    if (federation_.residual_lr > 0) opt.residual.schedule.lr = federation_.residual_lr;
    opt.relation = opt.residual;
    opt.relation.schedule.lr = federation_.relation_lr;
    opt.lambda_prox = federation_.lambda_prox;
    opt.lambda_kd = federation_.lambda_kd;
    opt.kd_temperature = federation_.kd_temperature;

    std::vector<int64_t> module_index;
    if (method_.family == MethodFamily::kH2Tune) {
        SharedMiddleOptions so;
        so.global_layers = global_layers > 0 ? global_layers : adapted_.model->num_layers();
        so.layers = adapted_.model->num_layers();
        so.modules = static_cast<int64_t>(federation_.modules.size());
        so.rank = adapted_.rank;
        so.max_rank = federation_.max_rank;
        so.mask = federation_.mask;
        so.align = federation_.align;
        so.tau = federation_.relation_tau;
        so.sigma = federation_.relation_sigma;
        so.mask_key = stream_key(seed_, 0x3a5c, static_cast<uint64_t>(config_.index));
        so.track_taylor = federation_.mask_refresh > 0 && federation_.mask_score == "taylor";
        so.device = device_;
        shared_ = std::make_unique<SharedMiddle>(so);
        dense_ = method_.dense;
        for (const auto& type : adapted_.module_types) {
            auto it = std::find(federation_.modules.begin(), federation_.modules.end(), type);
            module_index.push_back(static_cast<int64_t>(it - federation_.modules.begin()));
        }
    }
    trainer_ = std::make_unique<AlternatingTrainer>(adapted_, shared_.get(), module_index, opt);
}

void ClientRuntime::receive_slices(const torch::Tensor& slices) {
    if (!shared_) throw Error("receive_slices: client does not share middle matrices");
    shared_->begin_round(slices);
    trainer_->fix_middles();
}

void ClientRuntime::receive_dense_bank(const torch::Tensor& bank) {
    dense_bank_ = bank;
    receive_slices(bank_gather(bank, shared_->masks()));
}

torch::Tensor ClientRuntime::dense_values(const torch::Tensor& values) const {
    torch::NoGradGuard no_grad;
    const auto& o = shared_->options();
    torch::Tensor bank = dense_bank_.defined() ? dense_bank_
                                               : torch::zeros({o.global_layers, o.modules, o.max_rank * o.max_rank});
    torch::Tensor dense = relation_mix(shared_->relation().detach().cpu(), bank).contiguous();
    dense.scatter_(2, shared_->masks().unsqueeze(0).expand({o.layers, -1, -1}).contiguous(), values.cpu());
    return dense;
}

void ClientRuntime::apply_bank_download(const BankDownload& d) {
    if (!shared_) throw Error("apply_bank_download: client does not share middle matrices");
    if (d.new_masks.defined()) shared_->set_masks(d.new_masks);  // before the slices: they follow the new masks
    if (dense_) receive_dense_bank(d.values);
    else receive_slices(d.values);
}

LoraUpload ClientRuntime::lora_upload() const {
    torch::NoGradGuard no_grad;
    LoraUpload u;
    u.client = config_.index;
    u.samples = static_cast<double>(train_size());
    for (size_t i = 0; i < adapted_.adapters.size(); ++i) {
        const std::string n = std::to_string(i);
        if (method_.lora.upload_A) u.factors["A/" + n] = adapted_.adapters[i]->lora_A.detach().cpu().clone();
        if (method_.lora.upload_B) u.factors["B/" + n] = adapted_.adapters[i]->lora_B.detach().cpu().clone();
    }
    return u;
}

std::map<std::string, std::vector<int64_t>> ClientRuntime::lora_factor_shapes() const {
    std::map<std::string, std::vector<int64_t>> out;
    for (size_t i = 0; i < adapted_.adapters.size(); ++i) {
        const auto& a = adapted_.adapters[i];
        out["A/" + std::to_string(i)] = {a->lora_A.size(0), a->lora_A.size(1)};
        out["B/" + std::to_string(i)] = {a->lora_B.size(0), a->lora_B.size(1)};
    }
    return out;
}

namespace {
// The frozen base weight W0 of adapter i's projection.
torch::Tensor base_weight(const AdaptedModel& adapted, size_t i) {
    for (const auto& p : adapted.model->named_parameters())
        if (p.key() == adapted.names[i] + ".weight") return p.value();
    throw ModelError("no base weight for " + adapted.names[i]);
}
}  // namespace

void ClientRuntime::apply_lora_download(const TensorMap& download, int round) {
    torch::NoGradGuard no_grad;
    bool merged = false;
    for (size_t i = 0; i < adapted_.adapters.size(); ++i) {
        auto& a = adapted_.adapters[i];
        const std::string n = std::to_string(i);
        auto A = download.find("A/" + n), B = download.find("B/" + n);
        if (A != download.end()) a->lora_A.copy_(A->second);
        if (B != download.end()) a->lora_B.copy_(B->second);
        auto sA = download.find("stackA/" + n), sB = download.find("stackB/" + n);
        if (sA != download.end() && sB != download.end()) {
            base_weight(adapted_, i).add_(torch::matmul(sB->second.to(device_), sA->second.to(device_)));
            merged = true;
        }
    }
    if (merged) {
        // FLoRA: a fresh LoRA for the next round, drawn from (seed, round, client).
        // Drawn on the CPU so that every device restarts from the same values.
        torch::manual_seed(stream_key(seed_, 0xf10a, static_cast<uint64_t>(round), static_cast<uint64_t>(config_.index)) &
                           0x7fffffffffffffffULL);
        for (auto& a : adapted_.adapters) {
            torch::Tensor fresh = torch::empty(a->lora_A.sizes());
            torch::nn::init::kaiming_uniform_(fresh, std::sqrt(5.0));
            a->lora_A.copy_(fresh);
            a->lora_B.zero_();
        }
        trainer_->specific_trainer().clear_moments();
    }
}

BankUpload ClientRuntime::bank_upload(bool with_taylor) const {
    torch::NoGradGuard no_grad;
    BankUpload u;
    u.client = config_.index;
    u.samples = static_cast<double>(loader_->size());
    u.rank = shared_->options().rank;
    if (with_taylor) {
        u.taylor = shared_->taylor().scores().contiguous();
        u.grad_scale = shared_->taylor().grad_scale().contiguous();
    }
    u.relation = shared_->relation().detach().cpu().contiguous();
    torch::Tensor values = shared_->middle_values().detach().cpu().contiguous();
    u.values = dense_ ? dense_values(values) : values;
    return u;
}

int64_t ClientRuntime::trainable_parameters() const {
    int64_t n = 0;
    for (const auto& p : adapted_.adapter_parameters()) n += p.numel();
    return n;
}

// A shared base carries whichever client's adapters and forward settings were set last.
void ClientRuntime::activate() {
    adapted_.activate();
    adapted_.model->set_activation_checkpointing(config_.activation_checkpointing);
}

void ClientRuntime::set_data_parallel(std::unique_ptr<GradientSync> sync, int member, int members) {
    sync_ = std::move(sync);
    member_ = sync_ ? member : 0;
    members_ = sync_ ? members : 1;
    trainer_->set_data_parallel(sync_.get(), member, members);
}

bool ClientRuntime::train_round(int round, const volatile std::sig_atomic_t* stop) {
    auto t0 = std::chrono::steady_clock::now();
    activate();
    adapted_.model->train();
    const bool alternate = shared_ && round > 0 && federation_.alternate != "none";
    // In a group the members decide together (the flag rides with the gradients).
    const auto stopping = [this, stop] { return sync_ ? sync_->stop_requested() : stop && *stop != 0; };
    RoundProgress& p = progress_;
    if (!alternate || federation_.alternate == "step") {
        while (p.steps_done < steps_per_round_) {
            Batch batch = to_device(loader_->next(), device_);
            if (!alternate) {
                p.loss_sum += trainer_->joint_step(batch);
            } else {
                torch::Tensor teacher;
                trainer_->shared_step(batch, &teacher);
                p.loss_sum += trainer_->specific_step(batch, teacher);
            }
            p.tokens += static_cast<double>(batch.tokens);
            ++p.steps_done;
            if (step_hook_) step_hook_(round, p.steps_done);
            if (p.steps_done < steps_per_round_ && stopping()) break;
        }
    } else if (p.steps_done < steps_per_round_) {
        // epoch: all shared steps, then the specific steps over the same batches.
        const DataLoader::Position start = loader_->position();
        std::vector<torch::Tensor> teachers;
        for (int64_t s = 0; s < steps_per_round_; ++s) {
            Batch batch = to_device(loader_->next(), device_);
            torch::Tensor teacher;
            trainer_->shared_step(batch, &teacher);
            teachers.push_back(teacher);
        }
        loader_->set_position(start);
        for (int64_t s = 0; s < steps_per_round_; ++s) {
            Batch batch = to_device(loader_->next(), device_);
            p.loss_sum += trainer_->specific_step(batch, teachers[static_cast<size_t>(s)]);
            p.tokens += static_cast<double>(batch.tokens);
        }
        p.steps_done = steps_per_round_;
    }
    trainer_->fix_middles();
    release_gradients();
    p.train_seconds += seconds_since(t0);
    return round_trained();
}

// Between a client's turns its gradients are dead weight (every step starts from zero): freeing
// them keeps a rank of many clients from holding one gradient copy of every adapter. A step then
// allocates fresh ones; 0 + g and g are the same numbers, so results do not change.
void ClientRuntime::release_gradients() {
    std::vector<torch::Tensor> params = adapted_.adapter_parameters();
    if (shared_)
        for (const auto& p : shared_->parameters()) params.push_back(p);
    for (auto& p : params)
        if (p.grad().defined()) p.mutable_grad().reset();
}

ClientRoundMetrics ClientRuntime::round_metrics() const {
    ClientRoundMetrics m;
    m.steps = static_cast<double>(progress_.steps_done);
    m.train_loss = progress_.steps_done ? progress_.loss_sum / static_cast<double>(progress_.steps_done) : 0.0;
    m.tokens = progress_.tokens;
    m.train_seconds = progress_.train_seconds;
    return m;
}

namespace {
torch::Tensor scalar_i64(int64_t v) { return torch::tensor(std::vector<int64_t>{v}, torch::kInt64); }
torch::Tensor scalar_f64(double v) { return torch::tensor(std::vector<double>{v}, torch::kFloat64); }

const torch::Tensor& require(const std::map<std::string, torch::Tensor>& state, const std::string& key) {
    auto it = state.find(key);
    if (it == state.end()) throw ModelError("client state: missing '" + key + "'");
    return it->second;
}
}  // namespace

std::map<std::string, torch::Tensor> ClientRuntime::state() const {
    torch::NoGradGuard no_grad;
    std::map<std::string, torch::Tensor> out;
    const auto params = adapted_.adapter_parameters();
    for (size_t i = 0; i < params.size(); ++i) out["adapter/" + std::to_string(i)] = params[i].detach().cpu().clone();
    if (shared_) {
        out["shared/z"] = shared_->relation_logits().detach().cpu().clone();
        out["shared/masks"] = shared_->masks().clone();
        out["shared/residual"] = shared_->residual().detach().cpu().clone();
        out["shared/slices"] = shared_->received_slices().cpu().clone();
        out["shared/taylor_scores"] = shared_->taylor().scores().clone();
        out["shared/taylor_grad_scale"] = shared_->taylor().grad_scale().clone();
        out["shared/taylor_steps"] = scalar_i64(shared_->taylor().steps());
    }
    for (auto& [key, value] : trainer_->state()) out["optim/" + key] = value.cpu();
    if (lora_ && method_.lora.merge)  // FLoRA has merged stacks into W0
        for (size_t i = 0; i < adapted_.adapters.size(); ++i)
            out["base/" + std::to_string(i)] = base_weight(adapted_, i).detach().cpu().clone();
    const DataLoader::Position pos = loader_->position();
    out["loader/epoch"] = scalar_i64(pos.epoch);
    out["loader/offset"] = scalar_i64(pos.offset);
    out["progress/steps_done"] = scalar_i64(progress_.steps_done);
    out["progress/loss_sum"] = scalar_f64(progress_.loss_sum);
    out["progress/tokens"] = scalar_f64(progress_.tokens);
    out["progress/train_seconds"] = scalar_f64(progress_.train_seconds);
    out["progress/bytes_down"] = scalar_f64(progress_.bytes_down);
    return out;
}

void ClientRuntime::load_state(const std::map<std::string, torch::Tensor>& state) {
    torch::NoGradGuard no_grad;
    auto params = adapted_.adapter_parameters();
    for (size_t i = 0; i < params.size(); ++i) {
        const torch::Tensor& v = require(state, "adapter/" + std::to_string(i));
        if (!v.sizes().equals(params[i].sizes()))
            throw ModelError("client state: adapter tensor " + std::to_string(i) + " has the wrong shape");
        params[i].copy_(v);
    }
    if (shared_) {
        shared_->load_state(require(state, "shared/z"), require(state, "shared/masks"), require(state, "shared/residual"),
                            require(state, "shared/slices"));
        shared_->taylor().load(require(state, "shared/taylor_scores"), require(state, "shared/taylor_grad_scale"),
                               require(state, "shared/taylor_steps").item<int64_t>());
    }
    if (lora_ && method_.lora.merge)
        for (size_t i = 0; i < adapted_.adapters.size(); ++i) {
            torch::Tensor w = base_weight(adapted_, i);
            const torch::Tensor& v = require(state, "base/" + std::to_string(i));
            if (!v.sizes().equals(w.sizes())) throw ModelError("client state: base weight " + std::to_string(i) + " has the wrong shape");
            w.copy_(v);
        }
    std::map<std::string, torch::Tensor> optim;
    for (const auto& [key, value] : state)
        if (key.compare(0, 6, "optim/") == 0) optim[key.substr(6)] = value;
    trainer_->load_state(optim);
    loader_->set_position({require(state, "loader/epoch").item<int64_t>(), require(state, "loader/offset").item<int64_t>()});
    progress_.steps_done = require(state, "progress/steps_done").item<int64_t>();
    progress_.loss_sum = require(state, "progress/loss_sum").item<double>();
    progress_.tokens = require(state, "progress/tokens").item<double>();
    progress_.train_seconds = require(state, "progress/train_seconds").item<double>();
    progress_.bytes_down = require(state, "progress/bytes_down").item<double>();
    trainer_->fix_middles();
}

EvalResult ClientRuntime::score_test_split(const EvalOptions& options) {
    EvalOptions opt = options;
    if (sync_) {  // a group splits the examples; every member must come here
        opt.member = member_;
        opt.members = members_;
    }
    EvalResult r = evaluate_classification(adapted_.model, *tokenizer_, test_encoded_, test_references_, labels_, opt);
    if (sync_) {
        std::vector<double> counts{static_cast<double>(r.correct), static_cast<double>(r.correct_generate),
                                   static_cast<double>(r.examples)};
        sync_->sum({}, counts);
        const double n = counts[2];
        r.accuracy = n > 0 ? counts[0] / n : 0.0;
        if (opt.generate) r.accuracy_generate = n > 0 ? counts[1] / n : -1.0;
    }
    return r;
}

void ClientRuntime::evaluate(ClientRoundMetrics& m) {
    auto t0 = std::chrono::steady_clock::now();
    EvalOptions opt;
    opt.generate = federation_.eval_generate;
    opt.limit = federation_.eval_examples;
    activate();
    const EvalResult r = score_test_split(opt);
    m.test_accuracy = r.accuracy;
    m.test_accuracy_generate = r.accuracy_generate;
    if (federation_.eval_probes && shared_) evaluate_probes(m);
    m.eval_seconds = seconds_since(t0);
}

// What the shared channel carries: the same test examples scored (by likelihood) with every
// middle matrix T = sum_j Pi[j, l] G^j[Omega] + D replaced by the round's residual D alone (what
// came from the bank removed, what this round's shared steps added kept), then by zero (T + I =
// I: the adapter is the plain LoRA B A the specific steps trained around T). The trained T is
// put back afterwards, bit for bit (it is recomputed from the same Z, slices and D).
void ClientRuntime::evaluate_probes(ClientRoundMetrics& m) {
    EvalOptions opt;
    opt.generate = false;
    opt.limit = federation_.eval_examples;
    const torch::Tensor residual = shared_->residual().detach();
    trainer_->set_middles(residual);
    m.test_accuracy_no_download = score_test_split(opt).accuracy;
    trainer_->set_middles(torch::zeros_like(residual));
    m.test_accuracy_no_middle = score_test_split(opt).accuracy;
    trainer_->fix_middles();
}

}  // namespace h2tune
