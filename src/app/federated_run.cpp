#include "h2tune/app/federated_run.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <thread>

#include "h2tune/app/build_info.h"
#include "h2tune/app/checkpoint.h"
#include "h2tune/app/cli.h"
#include "h2tune/app/client_placement.h"
#include "h2tune/app/client_runtime.h"
#include "h2tune/app/fault_injection.h"
#include "h2tune/app/federation_server.h"
#include "h2tune/app/group_gradient_sync.h"
#include "h2tune/app/round_messages.h"
#include "h2tune/app/stop_signal.h"
#include "h2tune/core/error.h"
#include "h2tune/core/methods.h"
#include "h2tune/core/process_setup.h"
#include "h2tune/core/rng.h"
#include "h2tune/io/file_fingerprint.h"
#include "h2tune/io/metrics_file.h"
#include "h2tune/method/mask_refresh.h"
#include "h2tune/model/llama_config.h"

namespace fs = std::filesystem;

namespace h2tune {

namespace {

using Clock = std::chrono::steady_clock;
const std::vector<std::string> kRoundMetrics = {"aggregate_seconds", "round_seconds"};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The rank's node-local GPU when LibTorch has CUDA (local rank modulo the visible devices, so
// one GPU per task under SLURM and round-robin over a node's GPUs under mpirun), else the CPU.
// H2TUNE_DEVICE=cpu forces the CPU.
torch::Device rank_device(const Communicator& comm) {
    const char* forced = std::getenv("H2TUNE_DEVICE");
    if (forced && std::string(forced) == "cpu") return torch::kCPU;
    if (!torch::cuda::is_available()) return torch::kCPU;
    const auto count = static_cast<int>(torch::cuda::device_count());
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(comm.local_rank() % count));
}

std::string format_bytes(double b) {
    char buf[32];
    if (b < 1024) std::snprintf(buf, sizeof buf, "%.0fB", b);
    else if (b < 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1fKiB", b / 1024);
    else std::snprintf(buf, sizeof buf, "%.2fMiB", b / (1024 * 1024));
    return buf;
}

std::string format_duration(double s) {
    char buf[32];
    if (s < 120) std::snprintf(buf, sizeof buf, "%.0fs", s);
    else std::snprintf(buf, sizeof buf, "%.0fm%02.0fs", std::floor(s / 60), std::fmod(s, 60));
    return buf;
}

// Rank 0's view of one round: every client's metrics row, and why any upload was refused.
struct RoundTable {
    std::vector<ClientMetricsRow> rows;  // [K]
    std::vector<std::string> exclusions; // "client K: reason"
    double aggregate_seconds = 0;
};

// What every rank reported for a round (rank 0: its own report too).
struct RoundReports {
    std::vector<RoundReport> reports;  // per rank (empty records when late)
    std::vector<bool> arrived;         // per rank
    bool any_stop = false, any_interrupted = false;
};

class FederatedRun {
public:
    FederatedRun(const JobConfig& job, const RunStart& start, Communicator& comm);
    int run();

private:
    // start-up
    void form_rank_groups();
    std::vector<ClientInfo> load_clients();
    void print_memory_summary(const std::vector<ClientInfo>& infos) const;
    void restore_client(ClientRuntime& client) const;
    void open_metrics(const std::vector<ClientInfo>& infos);
    void create_metrics_file(const std::vector<ClientInfo>& infos);
    void configure_lora_groups();
    void configure_h2tune_bank();
    // a round
    int run_round(int round);
    void deliver(int round, const std::vector<bool>& participating);
    bool train(int round, const std::vector<bool>& participating);
    RoundReport evaluate_and_upload(int round, const std::vector<bool>& participating, bool interrupted);
    UploadRecord upload_record(ClientRuntime& client, int round, bool participated);
    RoundDecision decide(int round, RoundReport own, const std::vector<bool>& participating, Clock::time_point start);
    RoundReports collect_reports(int round, RoundReport own, Clock::time_point round_start);
    void drain_stale_reports();
    RoundTable tabulate_uploads(const RoundReports& reports, const std::vector<bool>& late, int round);
    void accept_record(const Bytes& record, int rank, int round, RoundTable& table, std::vector<bool>& seen);
    void record_round(RoundTable& table, int round, Clock::time_point round_start);
    int act_on(const RoundDecision& decision, int round);
    std::pair<std::string, double> checkpoint(int64_t next_round, bool in_progress);
    void save_adapters();

    const JobConfig& job_;
    const RunStart& start_;
    Communicator& comm_;
    const MethodSpec& method_;
    const bool root_;
    const size_t K_;
    const fs::path out_dir_, metrics_path_;
    const FaultInjection fault_ = FaultInjection::from_environment();
    int64_t global_layers_ = 0;
    const std::vector<RankGroup> placement_;    // every client's ranks
    std::unique_ptr<Communicator> group_;        // this rank's client group (clients over several ranks)
    BaseModelPool base_models_;                 // frozen bases shared by this rank's clients
    // The clients this rank leads: it trains, evaluates, uploads and checkpoints them. A follower
    // rank of a client's group leads none; it holds `replica_`, trained and evaluated in step with
    // the leader's.
    std::vector<std::unique_ptr<ClientRuntime>> clients_;
    std::unique_ptr<ClientRuntime> replica_;
    std::unique_ptr<MetricsFile> metrics_;       // rank 0
    std::unique_ptr<FederationServer> server_;  // rank 0 of a federated method
    std::vector<int> lora_groups_;               // LoRA baselines: every client's group (-1: alone)
    std::vector<int> stale_reports_;             // rank 0: late reports still to come, per rank
    int start_round_ = 0;
    Clock::time_point run_start_ = Clock::now();
};

FederatedRun::FederatedRun(const JobConfig& job, const RunStart& start, Communicator& comm)
    : job_(job),
      start_(start),
      comm_(comm),
      method_(method_spec(job.run.method)),
      root_(comm.rank() == 0),
      K_(job.clients.size()),
      out_dir_(job.run.output),
      metrics_path_(out_dir_ / "metrics.h5"),
      placement_(place_clients(job, comm.size())),
      stale_reports_(static_cast<size_t>(comm.size()), 0) {}

int FederatedRun::run() {
    if (method_.family == MethodFamily::kH2Tune) global_layers_ = resolve_global_layers(job_);
    form_rank_groups();
    open_metrics(load_clients());
    if (method_.family == MethodFamily::kLoraBaseline) configure_lora_groups();
    if (method_.family == MethodFamily::kH2Tune) configure_h2tune_bank();
    if (root_ && server_ && start_.resume) server_->load_state(start_.saved_server);

    start_round_ = start_.resume ? static_cast<int>(start_.from.next_round) : 0;
    run_start_ = Clock::now();
    for (int round = start_round_; round < job_.run.rounds; ++round) {
        const int exit_code = run_round(round);
        if (exit_code >= 0) return exit_code;
    }
    if (root_) {
        std::printf("h2tune train: done in %s; metrics in %s\n", format_duration(seconds_since(run_start_)).c_str(),
                    metrics_path_.string().c_str());
        std::fflush(stdout);
    }
    save_adapters();
    comm_.barrier();
    return kExitOk;
}

// ------------------------------------------------------------------ start-up

// A client's checkpointed state, on the base model it was trained on (checkpoints since the
// base model's fingerprint was recorded; older ones are restored unchecked).
void FederatedRun::restore_client(ClientRuntime& c) const {
    const std::string file = (fs::path(start_.from.dir) / client_file_name(c.config().index)).string();
    std::map<std::string, std::string> attributes;
    TensorMap state = read_tensor_file(file, &attributes);
    const auto recorded = attributes.find("base_model");
    if (recorded != attributes.end()) {
        const std::string difference = fingerprint_difference(recorded->second, c.base_model_fingerprint());
        if (!difference.empty())
            throw ConfigError("client." + std::to_string(c.config().index) + ".model_dir " + c.model_dir() + ": " +
                              difference + "; the checkpoint " + start_.from.dir +
                              " was trained on another base model (resume with that one, or start a new run)");
    }
    c.load_state(state);
}

// Clients over several ranks: one communicator per client's group (collective over all ranks),
// and rank 0 says where they are.
void FederatedRun::form_rank_groups() {
    if (!has_rank_groups(placement_)) return;
    int mine = -1;
    for (size_t k = 0; k < K_; ++k)
        if (placement_[k].contains(comm_.rank())) mine = static_cast<int>(k);
    group_ = comm_.split(mine);
    if (!root_) return;
    std::string groups;
    for (size_t k = 0; k < K_; ++k)
        if (placement_[k].size > 1)
            groups += (groups.empty() ? "" : ", ") + ("client " + std::to_string(k) + " on ranks " +
                                                      std::to_string(placement_[k].first) + "-" +
                                                      std::to_string(placement_[k].first + placement_[k].size - 1));
    std::printf("h2tune train: data-parallel clients (gradients summed every step: NCCL on GPUs when built with it, "
                "else MPI): %s\n", groups.c_str());
    std::fflush(stdout);
}

// Builds this rank's clients (restored from the checkpoint on resume) and describes the ones it
// leads; a follower builds its group's client as the replica.
std::vector<ClientInfo> FederatedRun::load_clients() {
    const RaiseSignalHook raise_hook = RaiseSignalHook::from_environment();
    const torch::Device device = rank_device(comm_);
    std::vector<ClientInfo> infos;
    for (size_t k = 0; k < K_; ++k) {
        const RankGroup& where = placement_[k];
        if (!where.contains(comm_.rank())) continue;
        auto runtime = std::make_unique<ClientRuntime>(job_, static_cast<int>(k), global_layers_, device, &base_models_);
        ClientRuntime& c = *runtime;
        if (where.size > 1)
            c.set_data_parallel(std::make_unique<GroupGradientSync>(*group_, stop_flag(), device),
                                comm_.rank() - where.first, where.size);
        if (comm_.rank() == where.first) clients_.push_back(std::move(runtime));
        else replica_ = std::move(runtime);
        if (raise_hook.active() && raise_hook.client == static_cast<int>(k))
            c.set_step_hook([raise_hook](int round, int64_t step) {
                if (round == raise_hook.round && step == raise_hook.step) std::raise(raise_hook.signal);
            });
        if (start_.resume) restore_client(c);  // a follower from its leader's file
        if (comm_.rank() != where.first) continue;
        ClientInfo info;
        info.client = static_cast<int32_t>(k);
        info.majority_rate = c.majority_rate();
        info.rank = c.rank();
        info.layers = c.num_layers();
        info.adapter_parameters = c.trainable_parameters();
        info.train_examples = c.train_size();
        info.test_examples = c.test_size();
        info.steps_per_round = c.steps_per_round();
        info.host_rank = comm_.rank();
        info.group_ranks = where.size;
        info.device = device.is_cuda() ? device.index() : -1;
        info.base_model = c.base_model_fingerprint();
        infos.push_back(info);
    }
    // How the rank's memory is spent: clients per base copy, and the resident set once loaded.
    std::map<const void*, int64_t> clients_per_base;
    for (const auto& c : clients_) ++clients_per_base[c->adapted().model.ptr().get()];
    const int64_t resident = resident_memory_bytes();
    for (size_t i = 0; i < infos.size(); ++i) {
        infos[i].base_model_clients = clients_per_base[clients_[i]->adapted().model.ptr().get()];
        infos[i].host_resident_bytes = resident;
    }
    return infos;
}

// One line: the largest resident set over the ranks once their clients were loaded, with that
// rank's clients and base-model copies (clients of one base on a rank share one copy).
void FederatedRun::print_memory_summary(const std::vector<ClientInfo>& infos) const {
    std::map<int32_t, std::pair<int64_t, double>> per_rank;  // rank -> (clients, base copies)
    std::map<int32_t, int64_t> resident;
    for (const auto& info : infos) {
        auto& [clients, copies] = per_rank[info.host_rank];
        ++clients;
        copies += 1.0 / static_cast<double>(std::max<int64_t>(1, info.base_model_clients));
        resident[info.host_rank] = info.host_resident_bytes;
    }
    int32_t largest = -1;
    for (const auto& [rank, bytes] : resident)
        if (largest < 0 || bytes > resident[largest]) largest = rank;
    if (largest < 0 || resident[largest] < 0) return;
    const auto& [clients, copies] = per_rank[largest];
    std::printf("h2tune train: resident memory %.0f MiB on rank %d (%lld clients, %lld base model cop%s)%s\n",
                static_cast<double>(resident[largest]) / (1024.0 * 1024.0), largest, static_cast<long long>(clients),
                static_cast<long long>(std::llround(copies)), std::llround(copies) == 1 ? "y" : "ies", per_rank.size() > 1 ? ", the largest of the ranks" : "");
    std::fflush(stdout);
}

// Rank 0 gathers every client's description; the file is created only now that every rank has
// loaded its clients, so bad data or models leave an earlier run's outputs untouched.
void FederatedRun::open_metrics(const std::vector<ClientInfo>& infos) {
    const auto parts = comm_.gather(encode_client_infos(infos), 0);
    if (!root_) return;
    std::vector<ClientInfo> all(K_);
    for (size_t r = 0; r < parts.size(); ++r)
        for (const auto& info : decode_client_infos(parts[r], "rank " + std::to_string(r), K_))
            all[static_cast<size_t>(info.client)] = info;
    print_memory_summary(all);
    if (!start_.resume) {
        create_metrics_file(all);
    } else {
        // Rounds after the checkpoint are recomputed; the file as it was is kept beside it.
        std::error_code ec;
        if (fs::exists(metrics_path_)) fs::rename(metrics_path_, out_dir_ / "metrics.h5.before-resume", ec);
        copy_file_atomically((fs::path(start_.from.dir) / kMetricsCopy).string(), metrics_path_.string());
        metrics_ = std::make_unique<MetricsFile>(metrics_path_.string());
        metrics_->set_attribute("rounds_planned", static_cast<int64_t>(job_.run.rounds));
        metrics_->set_attribute("resumed_from", start_.from.dir);
        std::printf("h2tune train: resuming %s from %s (round %lld%s), %zu clients on %d ranks\n",
                    out_dir_.string().c_str(), start_.from.dir.c_str(), static_cast<long long>(start_.from.next_round + 1),
                    start_.from.in_progress ? ", in progress" : "", K_, comm_.size());
        std::fflush(stdout);
    }
    metrics_->close();  // readable while round 0 runs
}

void FederatedRun::create_metrics_file(const std::vector<ClientInfo>& infos) {
    fs::create_directories(out_dir_);
    metrics_ = std::make_unique<MetricsFile>(metrics_path_.string(), static_cast<int64_t>(K_), client_metric_names(),
                                             kRoundMetrics, start_.force);
    for (const auto& [name, value] : std::vector<std::pair<const char*, std::string>>{
             {"h2tune_version", h2tune_version()}, {"git_sha", git_sha()}, {"torch_version", torch_version()},
             {"mpi_version", mpi_version()}, {"hdf5_version", hdf5_version()}, {"cpu_model", cpu_model()},
             {"method", job_.run.method},
             {"job_file", job_.source}})
        metrics_->set_attribute(name, value);
    metrics_->set_attribute("rounds_planned", static_cast<int64_t>(job_.run.rounds));
    metrics_->set_attribute("num_ranks", static_cast<int64_t>(comm_.size()));
    metrics_->write_config(start_.config_text);
    // The resolved job beside the outputs: `--resume DIR` needs nothing else.
    const std::string job_copy = (out_dir_ / kJobCopy).string();
    {
        std::ofstream out(job_copy + ".tmp", std::ios::trunc);
        out << start_.config_text;
        if (!out.flush()) throw IoError(job_copy + ".tmp: cannot write");
    }
    publish_file(job_copy + ".tmp", job_copy);
    std::printf("h2tune train: %zu clients on %d ranks, method %s, %d rounds -> %s\n", K_, comm_.size(),
                job_.run.method.c_str(), job_.run.rounds, metrics_path_.string().c_str());
    std::fflush(stdout);

    std::vector<std::string> names;
    for (const auto& c : job_.clients) names.push_back(c.model + "/" + (c.task.empty() ? c.train_file : c.task));
    metrics_->write_client_names(names);
    std::vector<std::string> base_models;
    for (const auto& info : infos) base_models.push_back(info.base_model);
    metrics_->write_client_strings("base_model", base_models);
    for (const auto& [field, value_of] : client_info_columns()) {
        std::vector<double> column;
        for (const auto& info : infos) column.push_back(value_of(info));
        metrics_->write_client_values(field, column);
    }
}

// LoRA baselines, once at start: every client tells rank 0 its group signature, factor shapes and
// scale; rank 0 forms the groups (printed) and tells every rank which clients are grouped.
void FederatedRun::configure_lora_groups() {
    std::vector<LoraDescription> mine;
    for (const auto& c : clients_)
        mine.push_back({c->config().index, c->lora_signature(), c->lora_scale(), c->lora_factor_shapes()});
    const auto parts = comm_.gather(encode_lora_descriptions(mine), 0);
    Bytes groups_message;
    if (root_) {
        std::vector<std::string> signatures(K_);
        std::vector<std::map<std::string, std::vector<int64_t>>> shapes(K_);
        std::vector<double> scales(K_, 1.0);
        for (size_t r = 0; r < parts.size(); ++r)
            for (auto& d : decode_lora_descriptions(parts[r], "rank " + std::to_string(r), K_)) {
                const auto k = static_cast<size_t>(d.client);
                signatures[k] = d.signature;
                scales[k] = d.scale;
                shapes[k] = std::move(d.factor_shapes);
            }
        LoraServer lora;
        lora.configure(method_.name, signatures, std::move(shapes), std::move(scales));
        std::printf("h2tune train: %s groups (clients aggregate only with the same architecture)\n%s",
                    method_.name.c_str(), lora.describe().c_str());
        std::fflush(stdout);
        groups_message = encode_lora_groups(lora.group);
        if (!start_.resume) {
            metrics_->write_client_values("group", std::vector<double>(lora.group.begin(), lora.group.end()));
            metrics_->close();
        }
        server_ = make_lora_server(std::move(lora), job_.federation.max_abs_value);
    }
    comm_.broadcast(groups_message, 0);
    lora_groups_ = decode_lora_groups(groups_message, K_);
}

// H2Tune, once at start: the bank's shape, and every client's masks announced to rank 0 (round 0
// needs them before any upload).
void FederatedRun::configure_h2tune_bank() {
    const BankShape shape{global_layers_, static_cast<int64_t>(job_.federation.modules.size()), job_.federation.max_rank};
    std::vector<MaskAnnouncement> mine;
    for (const auto& c : clients_) {
        MaskAnnouncement a{c->config().index, c->shared()->masks(), 0};
        fault_.corrupt(a, shape.max_rank);
        mine.push_back(std::move(a));
    }
    const auto parts = comm_.gather(encode_mask_announcements(mine), 0);
    if (!root_) return;
    if (!start_.resume) {
        metrics_->set_attribute("global_layers", shape.global_layers);
        metrics_->set_attribute("max_rank", shape.max_rank);
        // What the reference implementation sends per client per round in each direction.
        metrics_->set_attribute("dense_bank_bytes", shape.global_layers * shape.modules * shape.max_rank *
                                                        shape.max_rank * static_cast<int64_t>(sizeof(float)));
        metrics_->close();
    }
    std::vector<MaskAnnouncement> all;
    for (size_t r = 0; r < parts.size(); ++r)
        for (auto& a : decode_mask_announcements(parts[r], "rank " + std::to_string(r), K_, shape))
            all.push_back(std::move(a));
    server_ = make_h2tune_server(shape, all, K_, method_, job_.federation);
}

// ------------------------------------------------------------------ a round

// Returns -1 to go on with the next round, or the exit code the run ends with.
int FederatedRun::run_round(int round) {
    const Clock::time_point round_start = Clock::now();
    const bool continuing = start_.resume && start_.from.in_progress && round == start_round_;
    const std::vector<bool> participating = sample_participants(job_, round);
    if (!continuing) {
        for (auto& client : clients_) client->begin_round();
        if (replica_) replica_->begin_round();
        if (method_.family != MethodFamily::kLocal) deliver(round, participating);
    }
    const bool interrupted = train(round, participating);
    RoundReport report = evaluate_and_upload(round, participating, interrupted);

    // Every rank reports to rank 0 (its uploads, whether a signal came, whether it cut its round
    // short); rank 0 waits at most round_timeout for them and answers each rank with what to do.
    RoundDecision decision;
    if (root_) {
        decision = decide(round, std::move(report), participating, round_start);
    } else {
        Bytes message = encode_report(report);
        fault_.corrupt_report(message, comm_.rank(), round);
        comm_.post(std::move(message), 0, kTagReport);
        decision = decode_decision(comm_.receive(0, kTagDecision), round);
    }
    return act_on(decision, round);
}

// Round start: rank 0 posts each rank one download message holding a record for each of its
// participating clients that is owed something. Posted, not sent: a rank still busy with an
// earlier round (round_timeout) must not hold rank 0 up; it finds its message when it gets here.
void FederatedRun::deliver(int round, const std::vector<bool>& participating) {
    Bytes mine;
    if (root_) {
        server_->begin_round(round, participating);
        std::vector<std::vector<DownloadRecord>> per_rank(static_cast<size_t>(comm_.size()));
        for (size_t k = 0; k < K_; ++k) {
            DownloadRecord d;
            d.client = static_cast<int32_t>(k);
            if (participating[k] && server_->download_for(k, d))  // to every rank of the client's group
                for (int r = placement_[k].first; r < placement_[k].first + placement_[k].size; ++r)
                    per_rank[static_cast<size_t>(r)].push_back(d);
        }
        for (int r = 1; r < comm_.size(); ++r)
            comm_.post(encode_download(method_.family, per_rank[static_cast<size_t>(r)]), r, kTagDownload);
        mine = encode_download(method_.family, per_rank[0]);  // rank 0's own clients need no MPI
    } else {
        mine = comm_.receive(0, kTagDownload);
    }
    const auto hosted = [this](int k) -> ClientRuntime& {
        for (auto& c : clients_)
            if (c->config().index == k) return *c;
        if (replica_ && replica_->config().index == k) return *replica_;
        throw MessageError("download for client " + std::to_string(k) + " reached rank " +
                           std::to_string(comm_.rank()) + ", which does not host it");
    };
    const auto layout_of = [&hosted](int k) {
        const ClientRuntime& c = hosted(k);
        const auto& o = c.shared()->options();
        return BankLayout{o.global_layers, o.modules, c.shared()->entries(), o.max_rank, c.dense_exchange()};
    };
    for (const auto& d : decode_download(mine, method_.family, layout_of)) {
        ClientRuntime& c = hosted(d.client);
        if (method_.family == MethodFamily::kH2Tune) c.apply_bank_download(d.bank);
        else c.apply_lora_download(d.lora, round);
        c.set_bytes_down(d.bytes);
    }
}

// Trains the participants; a stop signal ends a client's round after the step in flight.
// Returns whether any client's round was cut short.
bool FederatedRun::train(int round, const std::vector<bool>& participating) {
    bool interrupted = false;
    std::vector<ClientRuntime*> hosted;
    for (auto& client : clients_) hosted.push_back(client.get());
    if (replica_) hosted.push_back(replica_.get());
    for (ClientRuntime* client : hosted) {
        const int k = client->config().index;
        if (!participating[static_cast<size_t>(k)]) continue;
        if (!client->train_round(round, stop_flag())) interrupted = true;
        if (const double stall = fault_.stall_after_training(k, round); stall > 0)
            std::this_thread::sleep_for(std::chrono::duration<double>(stall));
    }
    return interrupted;
}

// Every hosted client's upload record (none when a client's round was interrupted).
RoundReport FederatedRun::evaluate_and_upload(int round, const std::vector<bool>& participating, bool interrupted) {
    RoundReport report;
    report.round = round;
    report.stop_requested = stop_requested();
    report.interrupted = interrupted;
    if (interrupted) return report;
    // A follower scores its share of its client's test examples; the leader's evaluate() adds
    // the group's counts.
    if (replica_ && participating[static_cast<size_t>(replica_->config().index)]) {
        ClientRoundMetrics share = replica_->round_metrics();
        replica_->evaluate(share);
    }
    for (auto& client : clients_) {
        const int k = client->config().index;
        UploadRecord record = upload_record(*client, round, participating[static_cast<size_t>(k)]);
        fault_.corrupt(record, round);
        Bytes bytes = encode_upload_record(record);
        fault_.corrupt_encoded(bytes, k, round);
        report.records.push_back(std::move(bytes));
    }
    return report;
}

UploadRecord FederatedRun::upload_record(ClientRuntime& client, int round, bool participated) {
    UploadRecord u;
    u.client = client.config().index;
    if (!participated) {  // sat the round out: no accuracy, nothing else to send
        clear_accuracies(u.row);
        return u;
    }
    {
        ClientRoundMetrics m = client.round_metrics();
        client.evaluate(m);
        u.row.train_loss = m.train_loss;
        u.row.test_accuracy = m.test_accuracy;
        u.row.test_accuracy_generate = m.test_accuracy_generate;
        u.row.test_accuracy_no_download = m.test_accuracy_no_download;
        u.row.test_accuracy_no_middle = m.test_accuracy_no_middle;
        u.row.tokens = m.tokens;
        u.row.bytes_down = client.progress().bytes_down;
        u.row.train_seconds = m.train_seconds;
        u.row.eval_seconds = m.eval_seconds;
        u.row.participated = 1.0;
    }
    if (method_.family == MethodFamily::kH2Tune) {
        const FederationConfig& f = job_.federation;
        // Taylor statistics go up just before the round that re-selects masks.
        const bool with_taylor = f.mask_score == "taylor" && mask_refresh_due(f.mask_refresh, round + 1);
        u.values = MethodFamily::kH2Tune;
        u.bank = client.bank_upload(with_taylor);
    } else if (method_.family == MethodFamily::kLoraBaseline && lora_groups_[static_cast<size_t>(u.client)] >= 0) {
        u.values = MethodFamily::kLoraBaseline;
        u.lora = client.lora_upload();
    }
    return u;
}

// Rank 0: collects the round's reports, validates and aggregates the uploads, records the row
// and tells every rank what to do next.
RoundDecision FederatedRun::decide(int round, RoundReport own, const std::vector<bool>& participating,
                                   Clock::time_point round_start) {
    const RoundReports reports = collect_reports(round, std::move(own), round_start);
    std::vector<bool> late(K_, false);
    for (size_t k = 0; k < K_; ++k) late[k] = participating[k] && !reports.arrived[static_cast<size_t>(placement_[k].first)];
    const bool last = round + 1 == job_.run.rounds;
    const int every = job_.federation.checkpoint_every;
    RoundDecision decision;
    decision.round = round;
    if (reports.any_interrupted) {
        decision.action = RoundDecision::kCheckpointInRound;
    } else {
        RoundTable table = tabulate_uploads(reports, late, round);
        record_round(table, round, round_start);
        decision.checkpoint = last || reports.any_stop || (every > 0 && (round + 1) % every == 0);
        if (reports.any_stop && !last) decision.action = RoundDecision::kStopAfterRound;
    }
    for (int r = 1; r < comm_.size(); ++r) comm_.post(encode_decision(decision), r, kTagDecision);
    // Collectives follow (checkpoint, or the end): first take in what late ranks still send.
    if (decision.checkpoint || decision.action != RoundDecision::kContinue || last) drain_stale_reports();
    return decision;
}

// Rank 0: its own report plus every other rank's for `round`, in rank order, waiting at most
// round_timeout seconds after `round_start` (0 = no limit). Reports of earlier rounds that arrive
// now are dropped; ranks that miss the deadline owe one more report (stale_reports_).
RoundReports FederatedRun::collect_reports(int round, RoundReport own, Clock::time_point round_start) {
    const auto n = static_cast<size_t>(comm_.size());
    RoundReports out;
    out.reports.resize(n);
    out.arrived.assign(n, false);
    out.any_stop = own.stop_requested;
    out.any_interrupted = own.interrupted;
    out.reports[0] = std::move(own);
    out.arrived[0] = true;
    const auto take = [&](size_t r, const Bytes& message) {
        RoundReport report = decode_report(message, "rank " + std::to_string(r));
        if (report.round < round) {  // a late report of an earlier round: its round went on without it
            --stale_reports_[r];
            return;
        }
        if (report.round != round)
            throw MessageError("round report from rank " + std::to_string(r) + ": for round " +
                               std::to_string(report.round) + " in round " + std::to_string(round));
        out.any_stop = out.any_stop || report.stop_requested;
        out.any_interrupted = out.any_interrupted || report.interrupted;
        out.reports[r] = std::move(report);
        out.arrived[r] = true;
    };
    const double timeout = job_.federation.round_timeout;
    if (timeout <= 0) {
        for (size_t r = 1; r < n; ++r)
            while (!out.arrived[r]) take(r, comm_.receive(static_cast<int>(r), kTagReport));
        return out;
    }
    const auto deadline = round_start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout));
    Bytes message;
    for (;;) {  // at least one pass: what has arrived counts even when the deadline has passed
        bool all = true;
        for (size_t r = 1; r < n; ++r) {
            while (!out.arrived[r] && comm_.try_receive(static_cast<int>(r), kTagReport, message)) take(r, message);
            all = all && out.arrived[r];
        }
        if (all || Clock::now() >= deadline) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    for (size_t r = 1; r < n; ++r)
        if (!out.arrived[r]) ++stale_reports_[r];
    return out;
}

// Rank 0, before a collective: receives (and drops) the reports late ranks still owe, so that no
// send is left waiting for a receiver.
void FederatedRun::drain_stale_reports() {
    for (size_t r = 1; r < stale_reports_.size(); ++r)
        for (; stale_reports_[r] > 0; --stale_reports_[r]) (void)comm_.receive(static_cast<int>(r), kTagReport);
}

// Rank 0: every client's row from its record; values validated and kept by the server (refused
// ones exclude their client from the round with the reason), then aggregated. Clients whose rank
// missed round_timeout (`late`) have no record: excluded, with NaN accuracy.
RoundTable FederatedRun::tabulate_uploads(const RoundReports& reports, const std::vector<bool>& late, int round) {
    RoundTable table;
    table.rows.assign(K_, ClientMetricsRow{});
    std::vector<bool> seen(K_, false);
    for (size_t r = 0; r < reports.reports.size(); ++r)
        for (const Bytes& record : reports.reports[r].records) accept_record(record, static_cast<int>(r), round, table, seen);
    for (size_t k = 0; k < K_; ++k) {
        if (seen[k]) continue;
        if (k >= late.size() || !late[k]) throw CommError("no upload record for client " + std::to_string(k));
        // Its rank missed the round's deadline: the round goes on without it.
        ClientMetricsRow& row = table.rows[k];
        row.participated = row.excluded = 1.0;
        clear_accuracies(row);
        row.train_loss = std::nan("");
        table.exclusions.push_back("client " + std::to_string(k) + ": no upload within round_timeout");
    }
    if (server_) {
        server_->fill_server_columns(table.rows);
        const auto t0 = Clock::now();
        server_->aggregate();
        table.aggregate_seconds = seconds_since(t0);
    }
    return table;
}

void FederatedRun::accept_record(const Bytes& record, int rank, int round, RoundTable& table, std::vector<bool>& seen) {
    UploadRecord u;
    try {
        u = decode_upload_header(record);
    } catch (const MessageError& e) {
        throw MessageError("unusable upload from rank " + std::to_string(rank) + ": " + e.what());
    }
    if (u.client < 0 || static_cast<size_t>(u.client) >= K_ || seen[static_cast<size_t>(u.client)])
        throw MessageError("upload from rank " + std::to_string(rank) + ": bad or duplicate client id " +
                           std::to_string(u.client));
    const auto k = static_cast<size_t>(u.client);
    seen[k] = true;
    table.rows[k] = u.row;
    if (u.values == MethodFamily::kLocal) return;
    std::string why;
    if (!server_) {
        why = "values from a client of a method that exchanges none";
    } else {
        try {
            decode_upload_values(record, server_->upload_layout(), u);
            why = server_->accept(u, round);
        } catch (const MessageError& e) {
            why = e.what();
        }
    }
    if (why.empty()) {
        table.rows[k] = u.row;
        return;
    }
    table.rows[k].excluded = 1.0;
    table.rows[k].bytes_up = static_cast<double>(record.size());
    table.exclusions.push_back("client " + std::to_string(k) + ": " + why);
}

// Rank 0: the round's row into metrics.h5 (flushed and closed) and one line on stdout.
void FederatedRun::record_round(RoundTable& table, int round, Clock::time_point round_start) {
    const double round_seconds = seconds_since(round_start);
    std::map<std::string, std::vector<double>> columns;
    for (const auto& c : metric_columns())
        for (const auto& row : table.rows) columns[c.name].push_back(row.*c.field);
    metrics_->append_round(columns, {{"aggregate_seconds", table.aggregate_seconds}, {"round_seconds", round_seconds}});

    double mean = 0, lowest = 1, up = 0, down = 0;
    int counted = 0;
    for (const auto& row : table.rows) {
        up += row.bytes_up;
        down += row.bytes_down;
        if (std::isnan(row.test_accuracy)) continue;
        mean += row.test_accuracy;
        lowest = std::min(lowest, row.test_accuracy);
        ++counted;
    }
    mean = counted ? mean / counted : 0.0;
    const double mean_round_seconds = seconds_since(run_start_) / (round + 1 - start_round_);
    const double eta = mean_round_seconds * (job_.run.rounds - round - 1);
    std::printf("round %d/%d  acc mean %.3f min %.3f  bytes up %s down %s  %.1fs  ETA %s\n", round + 1, job_.run.rounds,
                mean, lowest, format_bytes(up).c_str(), format_bytes(down).c_str(), round_seconds,
                format_duration(eta).c_str());
    for (const auto& why : table.exclusions) std::printf("  excluded %s\n", why.c_str());
    std::fflush(stdout);
}

// Checkpoints as decided; returns -1 to go on, or the exit code of a run stopped by a signal.
int FederatedRun::act_on(const RoundDecision& decision, int round) {
    const std::string out = out_dir_.string();
    if (decision.action == RoundDecision::kCheckpointInRound) {
        const auto [dir, seconds] = checkpoint(round, true);
        if (root_) {
            std::printf("h2tune train: stopped by a signal inside round %d; checkpoint %s (%.1fs); resume with "
                        "--resume %s\n", round + 1, dir.c_str(), seconds, out.c_str());
            std::fflush(stdout);
        }
        return kExitPreempted;
    }
    if (!decision.checkpoint) return -1;
    const auto [dir, seconds] = checkpoint(round + 1, false);
    if (root_) {
        metrics_->file().set_attribute("/", "checkpoint_seconds_last", seconds);
        metrics_->close();
    }
    if (decision.action != RoundDecision::kStopAfterRound) return -1;
    if (root_) {
        std::printf("h2tune train: stopped by a signal after round %d; checkpoint %s; resume with --resume %s\n",
                    round + 1, dir.c_str(), out.c_str());
        std::fflush(stdout);
    }
    return kExitPreempted;
}

std::pair<std::string, double> FederatedRun::checkpoint(int64_t next_round, bool in_progress) {
    const auto t0 = Clock::now();
    CheckpointRequest request;
    request.root = (out_dir_ / "checkpoints").string();
    request.metrics_path = metrics_path_.string();
    request.config_text = start_.config_text;
    request.keep = job_.federation.keep_checkpoints;
    request.next_round = next_round;
    request.in_progress = in_progress;
    const std::string dir = write_checkpoint(comm_, request, clients_, server_.get());
    return {dir, seconds_since(t0)};
}

void FederatedRun::save_adapters() {
    const fs::path adapter_dir = out_dir_ / "adapters";
    for (auto& client : clients_) {
        fs::create_directories(adapter_dir);
        const std::string name = "client_" + std::to_string(client->config().index) + ".safetensors";
        save_adapter(client->adapted(), (adapter_dir / name).string());
    }
}

}  // namespace

int run_federated(const JobConfig& job, const RunStart& start, Communicator& comm) {
    return FederatedRun(job, start, comm).run();
}

int64_t resolve_global_layers(const JobConfig& job) {
    if (job.federation.global_layers > 0) return job.federation.global_layers;
    int64_t deepest = 0;
    for (const auto& c : job.clients) {
        const std::string dir = resolve_client_paths(c).model_dir;
        deepest = std::max(deepest, llama_config_load((fs::path(dir) / "config.json").string()).num_hidden_layers);
    }
    return deepest;
}

std::vector<bool> sample_participants(const JobConfig& job, int round) {
    const int64_t K = static_cast<int64_t>(job.clients.size());
    const int64_t take = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(job.federation.participation * K - 1e-9)));
    std::vector<bool> chosen(static_cast<size_t>(K), false);
    auto order = permutation(K, stream_key(job.run.seed, 0x9a47, static_cast<uint64_t>(round)));
    for (int64_t i = 0; i < take; ++i) chosen[static_cast<size_t>(order[static_cast<size_t>(i)])] = true;
    return chosen;
}

}  // namespace h2tune
