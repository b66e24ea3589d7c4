// `h2tune train`: option parsing and start-up (MPI, threads, signal handlers, the checkpoint to
// resume from); the run itself is app/federated_run.h.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "h2tune/app/checkpoint.h"
#include "h2tune/app/cli.h"
#include "h2tune/app/command_options.h"
#include "h2tune/app/federated_run.h"
#include "h2tune/app/stop_signal.h"
#include "h2tune/comm/communicator.h"
#include "h2tune/core/error.h"
#include "h2tune/core/job_config.h"
#include "h2tune/core/process_setup.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace h2tune {

namespace {

int threads_per_rank(const JobConfig& job, const Communicator& comm) {
    if (job.run.threads > 0) return job.run.threads;
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    return std::max(1, cores / std::max(1, comm.local_size()));
}

// A rank with more threads than cores it may run on (mpirun's binding) gains nothing from them:
// rank 0 says so once, with how many ranks are affected.
void warn_if_bound_below(int threads, const Communicator& comm) {
    const int cores = usable_cores();
    const bool short_of_cores = cores > 0 && cores < threads;
    const int64_t affected = comm.allreduce_sum(static_cast<int64_t>(short_of_cores ? 1 : 0));
    if (comm.rank() != 0 || affected == 0) return;
    std::printf("h2tune train: warning: %lld of %d ranks run %d threads on fewer cores (rank 0 may use %d); "
                "mpirun binds each rank to one core when it starts one or two ranks: pass --bind-to none, or "
                "--map-by slot:PE=%d --bind-to core\n",
                static_cast<long long>(affected), comm.size(), threads, cores, threads);
    std::fflush(stdout);
}

// The output directory, created now, so that a path that cannot hold outputs fails before any
// model is loaded, with the reason.
void require_writable_output(const std::string& output) {
    std::error_code ec;
    if (fs::exists(output, ec) && !fs::is_directory(output, ec))
        throw ConfigError("run.output " + output + ": exists and is not a directory");
    fs::create_directories(output, ec);
    if (ec) throw IoError("run.output " + output + ": cannot create the directory: " + ec.message());
    if (::access(output.c_str(), W_OK | X_OK) != 0)
        throw IoError("run.output " + output + ": cannot write there: " + std::strerror(errno));
}

// Resume: the newest committed checkpoint that verifies, and a job it is compatible with.
void choose_resume_point(Communicator& comm, const std::string& config_path, const std::string& checkpoint_root,
                         int64_t rounds, RunStart& start) {
    start.from = choose_checkpoint(comm, checkpoint_root);
    // A run cannot be continued to fewer rounds than it has done (rounds_planned would lie).
    const int64_t needed = start.from.next_round + (start.from.in_progress ? 1 : 0);
    if (needed > rounds)
        throw ConfigError("run.rounds: " + std::to_string(rounds) + " is below the " +
                          std::to_string(start.from.next_round) + " rounds the checkpoint " + start.from.dir +
                          " has done" + (start.from.in_progress ? " (and part of the next)" : "") + "; give --rounds " +
                          std::to_string(needed) + " or more to continue the run");
    if (comm.rank() == 0) {
        std::map<std::string, std::string> attrs;
        start.saved_server = read_tensor_file((fs::path(start.from.dir) / kServerFile).string(), &attrs);
        const auto differing = incompatible_keys(attrs["config"], start.config_text);
        if (!differing.empty()) {
            std::string list;
            for (const auto& d : differing) list += "\n  " + d;
            throw ConfigError(config_path + ": incompatible with the checkpoint in " + start.from.dir +
                              "; these keys differ:" + list);
        }
    }
    comm.barrier();
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
    const JobConfig job = load_job_config(config_path, overrides);
    RunStart start;
    start.config_text = job_config_to_ini(job);
    start.resume = resume;
    start.force = vm["force"].as<bool>();

    MpiSession mpi(nullptr, nullptr);
    Communicator comm;
    install_stop_handlers();
    const int threads = threads_per_rank(job, comm);
    set_compute_threads(threads);
    warn_if_bound_below(threads, comm);
    const fs::path metrics_path = fs::path(job.run.output) / "metrics.h5";
    if (comm.rank() == 0) require_writable_output(job.run.output);
    if (resume) choose_resume_point(comm, config_path, (fs::path(job.run.output) / "checkpoints").string(), job.run.rounds,
                                    start);
    // Refuse to overwrite before any work.
    if (comm.rank() == 0 && !resume && !start.force && fs::exists(metrics_path))
        throw ConfigError(metrics_path.string() + ": already exists; choose another --output, --resume the run, or "
                          "pass --force to overwrite it");
    return run_federated(job, start, comm);
}

}  // namespace h2tune
