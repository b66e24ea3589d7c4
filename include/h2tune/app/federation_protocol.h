// The per-round message protocol of `h2tune train`: masks announced once,
// rank 0 sends every participating client its slice of the global bank, clients upload their
// sparse middle-matrix values, relation and sample count with their metrics, rank 0 validates
// every payload, aggregates the accepted ones and returns the metrics row. One contiguous buffer
// per message; each client's record is length-prefixed so a corrupted one is rejected alone.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "h2tune/app/client_runtime.h"
#include "h2tune/app/lora_baselines.h"
#include "h2tune/comm/communicator.h"
#include "h2tune/core/job_config.h"
#include "h2tune/core/wire.h"
#include "h2tune/method/sparse_bank.h"

namespace h2tune {

// Metric columns of /metrics, in the order records carry them.
const std::vector<std::string>& client_metric_names();

struct FederatedServer {
    BankShape shape;
    torch::Tensor bank;                     // [L_g, M, R*R]
    std::vector<torch::Tensor> masks;       // per client [M, r^2] (undefined: unknown)
    std::vector<std::string> mask_errors;   // per client: why its announced mask is unusable
    std::vector<double> mask_bytes;         // per client: bytes of the mask announcement
    std::vector<torch::Tensor> relations;   // per client: Pi_k of its last accepted upload
    std::vector<torch::Tensor> taylor;      // per client: Taylor scores [M, r^2] of its last upload
    std::vector<torch::Tensor> grad_scale;  // per client: mean |dL/dT| per module [M], same upload
    std::vector<torch::Tensor> new_masks;   // per client: masks re-selected this round (undefined: none)
    std::vector<double> mask_changed;       // per client: share of mask entries replaced this round
    bool dense = false;                     // h2tune-dense: whole bank down, whole matrices up
    double max_abs_value = 0;               // reject uploads with a larger |value| (0 = no limit)
    bool lora_method = false;               // a LoRA baseline instead of H2Tune
    LoraServer lora;
};

// Test hook: H2TUNE_INJECT_FAULT="KIND:CLIENT:ROUND" corrupts that client's payload, with KIND
// nan (NaN values), explode (values scaled by 1e8), truncate (a cut-off record), rank (claims
// rank R + 1) or index (announces a mask index past R*R; ROUND is ignored), or stall (the client's rank sleeps
// H2TUNE_STALL_SECONDS, default 5, after training). Used by the MPI tests of exclusion.
struct FaultInjection {
    std::string kind;
    int client = -1, round = -1;
    double stall_seconds = 0;
    static FaultInjection from_environment();
    bool hits(int k, int r) const { return !kind.empty() && k == client && (round < 0 || r == round); }
};

// L_g: federation.global_layers, or the deepest client's layer count (read from each config.json).
int64_t resolve_global_layers(const JobConfig& job);
// The clients sampled for `round` (at least one), drawn from (seed, round).
std::vector<bool> sample_participants(const JobConfig& job, int round);

// mask_refresh = N re-selects masks at the start of rounds N, 2N, ... (never round 0).
bool mask_refresh_due(const FederationConfig& federation, int round);
// Rank 0, at the start of every round: when a refresh is due, re-selects the mask of every
// participating client whose relation it has, from |M_k| or the Taylor score (method/mask_refresh.h),
// records the changed ones in server.new_masks (sent with the download) and the share of entries
// replaced in server.mask_changed. Does nothing else on other rounds.
void refresh_masks(FederatedServer& server, const FederationConfig& federation, int round,
                   const std::vector<bool>& participating);

// LoRA baselines, once at start: every client tells rank 0 its group signature, factor shapes and
// scale; rank 0 forms the groups (printed) and tells every rank which of its clients are grouped.
// Returns the group of every client (-1: alone, trains locally).
std::vector<int> configure_lora_groups(Communicator& comm, const std::vector<std::unique_ptr<ClientRuntime>>& clients,
                                       FederatedServer& server, size_t num_clients, const std::string& method);
// LoRA baselines, at the start of a round: each participating grouped client receives what is
// pending for it (the group's state after its last aggregation, or FLoRA's stacks) and applies it.
// Returns the download bytes per hosted client.
std::map<int, double> send_lora_downloads(Communicator& comm, const std::vector<std::unique_ptr<ClientRuntime>>& clients,
                                          FederatedServer& server, const std::vector<bool>& participating,
                                          size_t num_clients, int round);

void exchange_masks(const Communicator& comm, const std::vector<std::unique_ptr<ClientRuntime>>& clients,
                    FederatedServer& server, size_t num_clients, const FaultInjection& fault);
// Returns the download bytes per hosted client (client index -> bytes).
std::map<int, double> send_downloads(Communicator& comm, const std::vector<std::unique_ptr<ClientRuntime>>& clients,
                                     const FederatedServer& server, const std::vector<bool>& participating,
                                     size_t num_clients);
// `federated`: the client sends values this round (H2Tune middle values, or a grouped LoRA
// baseline client's factors).
void pack_upload(ByteWriter& out, ClientRuntime& client, const ClientRoundMetrics& m, bool participated,
                 bool federated, const FaultInjection& fault, int round, double bytes_down);

struct RoundTable {
    std::map<std::string, std::vector<double>> columns;  // metric -> [K]
    std::vector<std::string> exclusions;                 // "client K: reason"
    double aggregate_seconds = 0;
};
// Rank 0: parses every rank's buffer, validates, aggregates (when federated) and tabulates.
// Clients flagged in `late` (their rank missed round_timeout) have no record: they are excluded
// from the round with NaN accuracy.
RoundTable receive_uploads(const std::vector<Bytes>& parts, FederatedServer& server, size_t num_clients,
                           bool federated, int round, const std::vector<bool>& late = {});

}  // namespace h2tune
