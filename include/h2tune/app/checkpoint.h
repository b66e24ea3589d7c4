// Checkpoint contents for `h2tune train`: named tensors <-> HDF5 files, the rank-0 server state,
// and the collective write/read of a whole checkpoint (io/checkpoint_dir.h is the on-disk
// protocol). Each rank writes its own clients' files: private adapters are never gathered.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "h2tune/app/client_runtime.h"
#include "h2tune/app/federation_server.h"
#include "h2tune/comm/communicator.h"
#include "h2tune/io/checkpoint_dir.h"

namespace h2tune {

using TensorMap = std::map<std::string, torch::Tensor>;

// One HDF5 file: /state/<key> datasets (float32, float64, int64 or uint8) and /index listing them,
// plus string attributes on "/". Written through a temporary name and published atomically.
void write_tensor_file(const std::string& path, const TensorMap& tensors,
                       const std::map<std::string, std::string>& attributes = {});
TensorMap read_tensor_file(const std::string& path, std::map<std::string, std::string>* attributes = nullptr);

struct CheckpointRequest {
    std::string root;          // OUTPUT/checkpoints
    std::string metrics_path;  // OUTPUT/metrics.h5 (rank 0 copies it in)
    std::string config_text;   // resolved job (stored for resume checks)
    int64_t next_round = 0;
    bool in_progress = false;
    int keep = 2;
};

// Collective: every rank writes its clients' files, rank 0 the server state (`server`, null for
// methods without one) and metrics copy,
// then rank 0 commits (after a gather that doubles as the barrier) and prunes old checkpoints.
// Returns the checkpoint directory.
std::string write_checkpoint(Communicator& comm, const CheckpointRequest& request,
                             const std::vector<std::unique_ptr<ClientRuntime>>& clients, const FederationServer* server);

// Rank 0 picks the newest committed checkpoint under `root` whose files verify, printing why it
// skipped any newer one; the choice is broadcast. Throws ConfigError when there is none.
CheckpointInfo choose_checkpoint(Communicator& comm, const std::string& root);
std::string client_file_name(int client);
constexpr const char* kServerFile = "server.h5";
constexpr const char* kMetricsCopy = "metrics.h5";

// The keys of two resolved job texts (INI) whose values differ, ignoring keys that may change on
// resume (run.output, run.rounds, run.threads, federation.checkpoint_every, federation.keep_checkpoints).
std::vector<std::string> incompatible_keys(const std::string& saved_ini, const std::string& current_ini);

}  // namespace h2tune
