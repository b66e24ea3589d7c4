// `h2tune train`: runs a job file under MPI. Clients are spread round-robin over the ranks; every
// rank trains and evaluates its clients, rank 0 gathers the metrics and writes metrics.h5.
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>

#include "h2tune/app/build_info.h"
#include "h2tune/app/cli.h"
#include "h2tune/app/checkpoint.h"
#include "h2tune/app/client_runtime.h"
#include "h2tune/app/stop_signal.h"
#include "h2tune/app/federation_protocol.h"
#include "h2tune/app/lora_baselines.h"
#include "h2tune/app/command_options.h"
#include "h2tune/comm/communicator.h"
#include "h2tune/core/error.h"
#include "h2tune/core/job_config.h"
#include "h2tune/core/wire.h"
#include "h2tune/io/metrics_file.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace h2tune {

namespace {

constexpr const char* kJobCopy = "job.ini";  // the resolved job, written beside metrics.h5
const std::vector<std::string> kRoundMetrics = {"aggregate_seconds", "round_seconds"};
const std::vector<std::string> kClientInfo = {"majority_rate", "rank",           "layers",
                                              "adapter_parameters", "train_examples", "test_examples",
                                              "steps_per_round", "host_rank", "device"};

// Rank 0 receives [client, v_0 .. v_{n-1}] records from every rank and sorts them by client.
std::vector<std::vector<double>> gather_records(const Communicator& comm, const std::vector<double>& local,
                                                size_t fields, size_t num_clients) {
    std::vector<std::vector<double>> table(num_clients);
    ByteWriter w;
    w.put_array(local.data(), local.size());
    auto parts = comm.gather(w.buffer(), 0);
    for (const auto& part : parts) {
        ByteReader r(part.data(), part.size(), "client info");
        const std::vector<double> v = r.get_array<double>();
        if (v.size() % (fields + 1) != 0) throw CommError("malformed metrics record");
        for (size_t i = 0; i < v.size(); i += fields + 1) {
            auto k = static_cast<size_t>(v[i]);
            if (k >= num_clients) throw CommError("metrics record for unknown client " + std::to_string(k));
            table[k].assign(v.begin() + static_cast<long>(i) + 1, v.begin() + static_cast<long>(i + fields + 1));
        }
    }
    return table;
}

int threads_per_rank(const JobConfig& job, const Communicator& comm) {
    if (job.run.threads > 0) return job.run.threads;
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    return std::max(1, cores / std::max(1, comm.local_size()));
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

constexpr int kTagReport = 43;
constexpr int kTagDecision = 44;

// What rank 0 tells every rank at the end of a round.
struct RoundDecision {
    enum Action : uint8_t { kContinue = 0, kCheckpointInRound = 1, kStopAfterRound = 2 };
    uint8_t action = kContinue;
    bool checkpoint = false;  // write a checkpoint at the round boundary
};

Bytes encode_decision(int round, const RoundDecision& d) {
    ByteWriter w;
    w.put<int32_t>(round);
    w.put<uint8_t>(d.action);
    w.put<uint8_t>(d.checkpoint ? 1 : 0);
    return std::move(w.buffer());
}

RoundDecision decode_decision(const Bytes& b, int round) {
    ByteReader r(b.data(), b.size(), "round decision");
    if (r.get<int32_t>() != round) throw CommError("round decision for another round");
    RoundDecision d;
    d.action = r.get<uint8_t>();
    d.checkpoint = r.get<uint8_t>() != 0;
    return d;
}

Bytes encode_report(int round, bool stop, bool interrupted, const Bytes& uploads) {
    ByteWriter w;
    w.put<int32_t>(round);
    w.put<uint8_t>(stop ? 1 : 0);
    w.put<uint8_t>(interrupted ? 1 : 0);
    w.append(uploads.data(), uploads.size());
    return std::move(w.buffer());
}

struct RoundReports {
    std::vector<Bytes> parts;   // per rank: its upload records (empty when late)
    std::vector<bool> arrived;  // per rank
    bool any_stop = false, any_interrupted = false;
};

// Rank 0: its own report plus every other rank's for `round`, in rank order, waiting at most
// `timeout` seconds after `round_start` (0 = no limit). Reports of earlier rounds that arrive
// now are dropped; ranks that miss the deadline owe one more report (`stale`).
RoundReports collect_reports(Communicator& comm, int round, const Bytes& own, bool own_stop, bool own_interrupted,
                             double timeout, std::chrono::steady_clock::time_point round_start, std::vector<int>& stale) {
    const auto n = static_cast<size_t>(comm.size());
    RoundReports out;
    out.parts.resize(n);
    out.arrived.assign(n, false);
    out.parts[0] = own;
    out.arrived[0] = true;
    out.any_stop = own_stop;
    out.any_interrupted = own_interrupted;
    const auto take = [&](size_t r, const Bytes& b) {
        ByteReader rd(b.data(), b.size(), "report from rank " + std::to_string(r));
        const int32_t of = rd.get<int32_t>();
        if (of < round) {  // a late report of an earlier round: its round went on without it
            --stale[r];
            return;
        }
        if (of != round) throw CommError("rank " + std::to_string(r) + " reported round " + std::to_string(of));
        out.any_stop = rd.get<uint8_t>() != 0 || out.any_stop;
        out.any_interrupted = rd.get<uint8_t>() != 0 || out.any_interrupted;
        out.parts[r].assign(b.begin() + static_cast<long>(rd.position()), b.end());
        out.arrived[r] = true;
    };
    for (size_t r = 1; r < n; ++r) {
        if (timeout > 0) continue;
        while (!out.arrived[r]) take(r, comm.receive(static_cast<int>(r), kTagReport));
    }
    if (timeout > 0) {
        const auto deadline = round_start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                std::chrono::duration<double>(timeout));
        Bytes b;
        for (;;) {
            bool all = true;
            for (size_t r = 1; r < n; ++r) {
                while (!out.arrived[r] && comm.try_receive(static_cast<int>(r), kTagReport, b)) take(r, b);
                all = all && out.arrived[r];
            }
            if (all || std::chrono::steady_clock::now() >= deadline) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        for (size_t r = 1; r < n; ++r)
            if (!out.arrived[r]) ++stale[r];
    }
    return out;
}

// Rank 0, before a collective: receives (and drops) the reports late ranks still owe, so that no
// send is left waiting for a receiver.
void drain_stale_reports(Communicator& comm, std::vector<int>& stale) {
    for (size_t r = 1; r < stale.size(); ++r)
        for (; stale[r] > 0; --stale[r]) (void)comm.receive(static_cast<int>(r), kTagReport);
}

void print_round(RoundTable& table, size_t K, int round, int rounds, double round_seconds, double mean_round_seconds) {
    double mean = 0, mn = 1, up = 0, down = 0;
    int counted = 0;
    for (size_t k = 0; k < K; ++k) {
        up += table.columns["bytes_up"][k];
        down += table.columns["bytes_down"][k];
        const double a = table.columns["test_accuracy"][k];
        if (std::isnan(a)) continue;
        mean += a;
        mn = std::min(mn, a);
        ++counted;
    }
    mean = counted ? mean / counted : 0.0;
    const double eta = mean_round_seconds * (rounds - round - 1);
    std::printf("round %d/%d  acc mean %.3f min %.3f  bytes up %s down %s  %.1fs  ETA %s\n", round + 1, rounds, mean,
                mn, format_bytes(up).c_str(), format_bytes(down).c_str(), round_seconds, format_duration(eta).c_str());
    for (const auto& why : table.exclusions) std::printf("  excluded %s\n", why.c_str());
    std::fflush(stdout);
}

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

bool is_h2tune_method(const std::string& m) { return m.compare(0, 6, "h2tune") == 0; }

// The ablation methods are h2tune with one component changed; the change is written into the
// resolved job so that metrics.h5 and checkpoints record what actually ran.
void apply_method_variant(JobConfig& job) {
    const std::string& m = job.run.method;
    auto set = [&](const std::string& key, const std::string& value) { job.resolved[key] = value; };
    if (m == "h2tune-full-rank") {
        for (auto& c : job.clients) {
            c.rank = job.federation.max_rank;
            set("client." + std::to_string(c.index) + ".rank", std::to_string(c.rank));
        }
    } else if (m == "h2tune-depth" || m == "h2tune-end") {
        job.federation.align = m == "h2tune-depth" ? "depth" : "end";
        set("federation.align", job.federation.align);
    } else if (m == "h2tune-joint") {
        job.federation.alternate = "none";
        set("federation.alternate", "none");
    }
}

}  // namespace

int cmd_train(const Args& args) {
    po::options_description desc("train options");
    std::vector<std::string> sets;
    desc.add_options()
        ("config,c", po::value<std::string>(), "job file (INI), e.g. jobs/default.ini (with --resume: defaults to DIR/job.ini)")
        ("output,o", po::value<std::string>(), "output directory (overrides run.output)")
        ("resume", po::value<std::string>(), "continue the run in DIR from its newest committed checkpoint")
        ("rounds", po::value<std::string>(), "number of rounds (overrides run.rounds)")
        ("method", po::value<std::string>(), "method (overrides run.method)")
        ("seed", po::value<std::string>(), "random seed (overrides run.seed)")
        ("threads", po::value<std::string>(), "intra-op threads per rank (overrides run.threads)")
        ("set", po::value<std::vector<std::string>>(&sets)->composing(), "override any key: --set client.0.lr=1e-3")
        ("force", po::bool_switch(), "overwrite an existing metrics.h5 in the output directory");
    po::variables_map vm;
    if (!parse_command_options("train", "--config FILE [options] | --resume DIR [options]", desc, args, vm))
        return kExitOk;

    const bool resume = vm.count("resume") > 0;
    if (!resume && !vm.count("config"))
        throw ConfigError("command line: train needs --config FILE (or --resume DIR to continue a run)");
    if (resume && vm.count("output") && fs::path(vm["output"].as<std::string>()) != fs::path(vm["resume"].as<std::string>()))
        throw ConfigError("command line: --output and --resume name different directories; a resumed run continues "
                          "in its own directory");
    ConfigOverrides overrides;
    for (const char* key : {"output", "rounds", "method", "seed", "threads"})
        if (vm.count(key)) overrides.emplace_back(std::string("run.") + key, vm[key].as<std::string>());
    if (resume) overrides.emplace_back("run.output", vm["resume"].as<std::string>());
    for (const auto& s : sets) {
        auto eq = s.find('=');
        if (eq == std::string::npos || eq == 0) throw ConfigError("command line: --set expects key=value, got '" + s + "'");
        overrides.emplace_back(s.substr(0, eq), s.substr(eq + 1));
    }
    std::string config_path;
    if (vm.count("config")) {
        config_path = vm["config"].as<std::string>();
    } else {
        config_path = (fs::path(vm["resume"].as<std::string>()) / kJobCopy).string();
        if (!fs::exists(config_path))
            throw ConfigError(config_path + ": not found; is '" + vm["resume"].as<std::string>() +
                              "' the --output of an h2tune train run? (or give --config)");
    }
    JobConfig job = load_job_config(config_path, overrides);
    apply_method_variant(job);
    const bool h2 = is_h2tune_method(job.run.method);
    const bool lora = is_lora_baseline(job.run.method);
    const bool federated = h2 || lora;  // anything leaves the clients
    const std::string config_text = job_config_to_ini(job);

    MpiSession mpi(nullptr, nullptr);
    Communicator comm;
    install_stop_handlers();
    set_compute_threads(threads_per_rank(job, comm));
    const size_t K = job.clients.size();
    const bool root = comm.rank() == 0;
    const fs::path out_dir = job.run.output;
    const fs::path metrics_path = out_dir / "metrics.h5";
    const std::string checkpoint_root = (out_dir / "checkpoints").string();

    // Resume: the newest committed checkpoint that verifies, and a config it is compatible with.
    CheckpointInfo from;
    TensorMap saved_server;  // rank 0: server.h5 of the checkpoint, read once
    if (resume) {
        from = choose_checkpoint(comm, checkpoint_root);
        if (root) {
            std::map<std::string, std::string> attrs;
            saved_server = read_tensor_file((fs::path(from.dir) / kServerFile).string(), &attrs);
            const auto differing = incompatible_keys(attrs["config"], config_text);
            if (!differing.empty()) {
                std::string list;
                for (const auto& d : differing) list += "\n  " + d;
                throw ConfigError(config_path + ": incompatible with the checkpoint in " + from.dir +
                                  "; these keys differ:" + list);
            }
        }
        comm.barrier();
    }

    // Refuse to overwrite before any work; the file itself is created only once every rank has
    // loaded its clients, so bad data or models leave an earlier run's outputs untouched.
    if (root && !resume && !vm["force"].as<bool>() && fs::exists(metrics_path))
        throw ConfigError(metrics_path.string() + ": already exists; choose another --output, --resume the run, or "
                          "pass --force to overwrite it");

    // Clients are spread round-robin: client k lives on rank k mod size.
    std::vector<std::unique_ptr<ClientRuntime>> clients;
    std::vector<double> info;
    const int64_t global_layers = h2 ? resolve_global_layers(job) : 0;
    const RaiseSignalHook raise_hook = RaiseSignalHook::from_environment();
    const torch::Device device = rank_device(comm);
    for (size_t k = static_cast<size_t>(comm.rank()); k < K; k += static_cast<size_t>(comm.size())) {
        clients.push_back(std::make_unique<ClientRuntime>(job, static_cast<int>(k), global_layers, device));
        auto& c = *clients.back();
        if (raise_hook.active() && raise_hook.client == static_cast<int>(k))
            c.set_step_hook([raise_hook](int round, int64_t step) {
                if (round == raise_hook.round && step == raise_hook.step) std::raise(raise_hook.signal);
            });
        if (resume) c.load_state(read_tensor_file((fs::path(from.dir) / client_file_name(static_cast<int>(k))).string()));
        info.insert(info.end(), {static_cast<double>(k), c.majority_rate(), static_cast<double>(c.rank()),
                                 static_cast<double>(c.num_layers()), static_cast<double>(c.trainable_parameters()),
                                 static_cast<double>(c.train_size()), static_cast<double>(c.test_size()),
                                 static_cast<double>(c.steps_per_round()), static_cast<double>(comm.rank()),
                                 device.is_cuda() ? static_cast<double>(device.index()) : -1.0});
    }
    auto info_table = gather_records(comm, info, kClientInfo.size(), K);

    std::unique_ptr<MetricsFile> metrics;
    if (root && resume) {
        // Rounds after the checkpoint are recomputed; the file as it was is kept beside it.
        std::error_code ec;
        if (fs::exists(metrics_path)) fs::rename(metrics_path, out_dir / "metrics.h5.before-resume", ec);
        copy_file_atomically((fs::path(from.dir) / kMetricsCopy).string(), metrics_path.string());
        metrics = std::make_unique<MetricsFile>(metrics_path.string());
        metrics->set_attribute("rounds_planned", static_cast<int64_t>(job.run.rounds));
        metrics->set_attribute("resumed_from", from.dir);
        std::printf("h2tune train: resuming %s from %s (round %lld%s), %zu clients on %d ranks\n",
                    out_dir.string().c_str(), from.dir.c_str(), static_cast<long long>(from.next_round + 1),
                    from.in_progress ? ", in progress" : "", K, comm.size());
        std::fflush(stdout);
    } else if (root) {
        fs::create_directories(out_dir);
        metrics = std::make_unique<MetricsFile>(metrics_path.string(), static_cast<int64_t>(K),
                                                client_metric_names(), kRoundMetrics, vm["force"].as<bool>());
        metrics->set_attribute("h2tune_version", h2tune_version());
        metrics->set_attribute("git_sha", git_sha());
        metrics->set_attribute("torch_version", torch_version());
        metrics->set_attribute("mpi_version", mpi_version());
        metrics->set_attribute("hdf5_version", hdf5_version());
        metrics->set_attribute("method", job.run.method);
        metrics->set_attribute("job_file", job.source);
        metrics->set_attribute("rounds_planned", static_cast<int64_t>(job.run.rounds));
        metrics->set_attribute("num_ranks", static_cast<int64_t>(comm.size()));
        metrics->write_config(config_text);
        // The resolved job beside the outputs: `--resume DIR` needs nothing else.
        const std::string job_copy = (out_dir / kJobCopy).string();
        {
            std::ofstream out(job_copy + ".tmp", std::ios::trunc);
            out << config_text;
            if (!out.flush()) throw IoError(job_copy + ".tmp: cannot write");
        }
        publish_file(job_copy + ".tmp", job_copy);
        std::printf("h2tune train: %zu clients on %d ranks, method %s, %d rounds -> %s\n", K, comm.size(),
                    job.run.method.c_str(), job.run.rounds, metrics_path.string().c_str());
        std::fflush(stdout);
    }

    if (root && !resume) {
        std::vector<std::string> names;
        for (const auto& c : job.clients) names.push_back(c.model + "/" + (c.task.empty() ? c.train_file : c.task));
        metrics->write_client_names(names);
        for (size_t f = 0; f < kClientInfo.size(); ++f) {
            std::vector<double> col(K);
            for (size_t k = 0; k < K; ++k) col[k] = info_table[k].at(f);
            metrics->write_client_values(kClientInfo[f], col);
        }
    }
    if (root) metrics->close();  // readable while round 0 runs

    FederatedServer server;
    server.max_abs_value = job.federation.max_abs_value;
    std::vector<int> lora_groups;
    if (lora) {
        lora_groups = configure_lora_groups(comm, clients, server, K, job.run.method);
        if (root && !resume) {
            std::vector<double> col(lora_groups.begin(), lora_groups.end());
            metrics->write_client_values("group", col);
            metrics->close();
        }
    }
    if (root && h2) {
        const int64_t M = static_cast<int64_t>(job.federation.modules.size()), R = job.federation.max_rank;
        if (!resume) {
            metrics->set_attribute("global_layers", global_layers);
            metrics->set_attribute("max_rank", static_cast<int64_t>(R));
            // What the reference implementation sends per client per round in each direction.
            metrics->set_attribute("dense_bank_bytes", global_layers * M * R * R * static_cast<int64_t>(sizeof(float)));
            metrics->close();
        }
        server.shape = BankShape{global_layers, M, R};
        server.dense = job.run.method == "h2tune-dense";
        server.bank = bank_zeros(server.shape);
        server.masks.resize(K);
    }
    const FaultInjection fault = FaultInjection::from_environment();
    // Round 0 needs the masks before any upload: clients announce them once at start.
    if (h2) exchange_masks(comm, clients, server, K, fault);
    if (root && federated && resume)
        load_server_state(server, saved_server, K);

    CheckpointRequest ckpt;
    ckpt.root = checkpoint_root;
    ckpt.metrics_path = metrics_path.string();
    ckpt.config_text = config_text;
    ckpt.keep = job.federation.keep_checkpoints;
    const auto checkpoint = [&](int64_t next_round, bool in_progress) {
        const auto t0 = std::chrono::steady_clock::now();
        ckpt.next_round = next_round;
        ckpt.in_progress = in_progress;
        const std::string dir = write_checkpoint(comm, ckpt, clients, root && federated ? &server : nullptr);
        return std::make_pair(dir, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    };

    const int start_round = resume ? static_cast<int>(from.next_round) : 0;
    std::vector<int> stale_reports(static_cast<size_t>(comm.size()), 0);  // rank 0: late reports still to come
    const auto run_start = std::chrono::steady_clock::now();
    for (int round = start_round; round < job.run.rounds; ++round) {
        const auto round_start = std::chrono::steady_clock::now();
        const bool continuing = resume && from.in_progress && round == start_round;
        const std::vector<bool> participating = sample_participants(job, round);
        if (!continuing) {
            for (auto& client : clients) client->begin_round();
            if (federated) {
                if (root && h2) refresh_masks(server, job.federation, round, participating);
                const auto bytes_down = h2 ? send_downloads(comm, clients, server, participating, K)
                                           : send_lora_downloads(comm, clients, server, participating, K, round);
                for (auto& client : clients) {
                    auto it = bytes_down.find(client->config().index);
                    if (it != bytes_down.end()) client->set_bytes_down(it->second);
                }
            }
        }

        // Train; a stop signal ends a client's round after the step in flight.
        bool interrupted = false;
        for (auto& client : clients) {
            const int k = client->config().index;
            if (!participating[static_cast<size_t>(k)]) continue;
            if (!client->train_round(round, stop_flag())) interrupted = true;
            if (fault.kind == "stall" && fault.hits(k, round))
                std::this_thread::sleep_for(std::chrono::duration<double>(fault.stall_seconds));
        }
        ByteWriter upload;
        if (!interrupted) {
            for (auto& client : clients) {
                const int k = client->config().index;
                ClientRoundMetrics m;
                const bool takes_part = participating[static_cast<size_t>(k)];
                if (takes_part) {
                    m = client->round_metrics();
                    client->evaluate(m);
                } else {
                    m.test_accuracy = m.test_accuracy_generate = std::numeric_limits<double>::quiet_NaN();
                }
                const bool sends = h2 || (lora && lora_groups[static_cast<size_t>(k)] >= 0);
                pack_upload(upload, *client, m, takes_part, sends, fault, round, client->progress().bytes_down);
            }
        }

        // Every rank reports to rank 0 (its uploads, whether a signal came, whether it cut its round
        // short); rank 0 waits at most round_timeout for them and answers each rank with what to do.
        RoundDecision decision;
        if (!root) {
            comm.post(encode_report(round, stop_requested(), interrupted, upload.buffer()), 0, kTagReport);
            decision = decode_decision(comm.receive(0, kTagDecision), round);
        } else {
            RoundReports reports = collect_reports(comm, round, upload.buffer(), stop_requested(), interrupted,
                                                   job.federation.round_timeout, round_start, stale_reports);
            std::vector<bool> late(K, false);
            for (size_t k = 0; k < K; ++k)
                late[k] = participating[k] && !reports.arrived[k % static_cast<size_t>(comm.size())];
            const bool last = round + 1 == job.run.rounds;
            const int every = job.federation.checkpoint_every;
            if (reports.any_interrupted) {
                decision.action = RoundDecision::kCheckpointInRound;
            } else {
                RoundTable table = receive_uploads(reports.parts, server, K, federated, round, late);
                const double round_seconds =
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - round_start).count();
                metrics->append_round(table.columns, {{"aggregate_seconds", table.aggregate_seconds},
                                                      {"round_seconds", round_seconds}});
                print_round(table, K, round, job.run.rounds, round_seconds,
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count() /
                                (round + 1 - start_round));
                decision.checkpoint = last || reports.any_stop || (every > 0 && (round + 1) % every == 0);
                if (reports.any_stop && !last) decision.action = RoundDecision::kStopAfterRound;
            }
            for (int r = 1; r < comm.size(); ++r) comm.post(encode_decision(round, decision), r, kTagDecision);
            // Collectives follow (checkpoint, or the end): first take in what late ranks still send.
            if (decision.checkpoint || decision.action != RoundDecision::kContinue || last)
                drain_stale_reports(comm, stale_reports);
        }

        if (decision.action == RoundDecision::kCheckpointInRound) {
            const auto [dir, seconds] = checkpoint(round, true);
            if (root) {
                std::printf("h2tune train: stopped by a signal inside round %d; checkpoint %s (%.1fs); resume with "
                            "--resume %s\n", round + 1, dir.c_str(), seconds, out_dir.string().c_str());
                std::fflush(stdout);
            }
            return kExitPreempted;
        }
        if (decision.checkpoint) {
            const auto [dir, seconds] = checkpoint(round + 1, false);
            if (root) {
                metrics->file().set_attribute("/", "checkpoint_seconds_last", seconds);
                metrics->close();
            }
            if (decision.action == RoundDecision::kStopAfterRound) {
                if (root) {
                    std::printf("h2tune train: stopped by a signal after round %d; checkpoint %s; resume with "
                                "--resume %s\n", round + 1, dir.c_str(), out_dir.string().c_str());
                    std::fflush(stdout);
                }
                return kExitPreempted;
            }
        }
    }
    if (root) {
        std::printf("h2tune train: done in %s; metrics in %s\n",
                    format_duration(std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count()).c_str(),
                    metrics_path.string().c_str());
    }
    for (auto& client : clients) {
        fs::path adapter_dir = out_dir / "adapters";
        fs::create_directories(adapter_dir);
        save_adapter(client->adapted(), (adapter_dir / ("client_" + std::to_string(client->config().index) + ".safetensors")).string());
    }
    comm.barrier();
    return kExitOk;
}

}  // namespace h2tune
