// The federated run of `h2tune train` on one rank: start-up (clients, metrics.h5, the exchange),
// then every round as a sequence of named phases — sample participants, deliver, train,
// evaluate and upload, collect, validate and aggregate, record, decide, checkpoint — and the
// adapters at the end. Clients are placed by app/client_placement.h: round-robin (client k on
// rank k mod size), or, when some span several ranks, each on contiguous ranks of its own.
// Collective over the communicator: every rank calls run_federated with the same job.
#pragma once

#include <string>
#include <vector>

#include "h2tune/comm/communicator.h"
#include "h2tune/core/job_config.h"
#include "h2tune/io/checkpoint_dir.h"
#include "h2tune/method/h2tune_server.h"

namespace h2tune {

constexpr const char* kJobCopy = "job.ini";  // the resolved job, written beside metrics.h5

struct RunStart {
    std::string config_text;  // the resolved job (job_config_to_ini)
    bool resume = false;
    bool force = false;       // overwrite an existing metrics.h5
    CheckpointInfo from;      // resume: the checkpoint chosen (every rank)
    TensorMap saved_server;   // resume, rank 0: the checkpoint's server state
};

// Runs every round of `job` from `start`; returns kExitOk, or kExitPreempted after a checkpoint
// taken on a stop signal.
int run_federated(const JobConfig& job, const RunStart& start, Communicator& comm);

// L_g: federation.global_layers, or the deepest client's layer count (read from each config.json).
int64_t resolve_global_layers(const JobConfig& job);
// The clients sampled for `round` (at least one), drawn from (seed, round).
std::vector<bool> sample_participants(const JobConfig& job, int round);

}  // namespace h2tune
