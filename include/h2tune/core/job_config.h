// A job file describes a whole federated run: run settings, federation (method) settings and a
// list of heterogeneous clients. INI syntax as Boost.Program_options parses it:
//
//   [run]        name, method, rounds, seed, output, threads
//   [federation] max_rank, alpha, modules, participation, mask, align, ... (see docs/jobs.md)
//   [clients]    defaults for every client (any client key)
//   [client.N]   one client: model, task or train_file/test_file, rank or resource, sizes, lr, ...
//
// Every value is validated; errors name the key and the file and line it came from (or
// "command line"). The command line overrides the file.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace h2tune {

struct RunConfig {
    std::string name = "h2tune";
    std::string method = "h2tune";
    int rounds = 5;
    uint64_t seed = 1234;
    std::string output = "runs/default";
    int threads = 0;  // per-rank intra-op threads; 0 = cores on the node / ranks on the node
    // Clients on one rank that name the same model files, dtype and device share one frozen base in
    // memory (false: each client loads its own copy; results are the same either way).
    bool share_base_models = true;
};

struct FederationConfig {
    int max_rank = 32;                 // R
    int global_layers = 0;             // L_g; 0 = max over clients of L_k
    double alpha = 16.0;               // LoRA scale numerator, s = alpha / r_k
    std::vector<std::string> modules = {"q", "k", "v", "o", "gate", "up", "down"};
    double participation = 1.0;        // fraction of clients sampled per round
    std::string mask = "topk";         // topk | block
    int mask_refresh = 0;              // re-select masks every N rounds (0 = never)
    std::string mask_score = "magnitude";  // magnitude | taylor
    std::string align = "relation";    // relation | depth | end
    double relation_tau = 1.0;         // softmax temperature of the relation matrix
    double relation_sigma = 0.5;       // width of the depth prior
    double relation_lr = 1e-2;         // learning rate of Z
    double residual_lr = 0.0;          // learning rate of the residual D (0 = the client's lr)
    std::string alternate = "step";    // step | epoch | none
    double lambda_prox = 0.1;
    double lambda_kd = 1.0;
    double kd_temperature = 2.0;
    int checkpoint_every = 1;
    int keep_checkpoints = 2;
    double round_timeout = 0.0;        // seconds; 0 = no limit
    double max_abs_value = 1e4;        // uploads with a larger |value| are rejected (0 = no limit)
    int eval_examples = 0;             // cap on test examples per client per round (0 = all)
    bool eval_generate = true;         // also evaluate by greedy generation + exact match
    bool eval_probes = false;          // H2Tune: also score without the downloaded mixture / without T
};

struct ClientConfig {
    int index = 0;
    std::string model = "h2-tiny";     // a built-in size or a directory with config.json
    std::string model_dir;             // pretrained weights; empty = data/models/<model>
    std::string model_dtype = "float32";  // storage/compute dtype of the frozen base: float32 | bfloat16 | float16
    bool activation_checkpointing = false;  // recompute each decoder block's activations in the backward
    std::string tokenizer;             // tokenizer.json; empty = <model_dir>/tokenizer.json
    std::string task;                  // built-in task name (data/tasks/<task>/) or empty
    std::string train_file;            // JSONL; default data/tasks/<task>/train.jsonl
    std::string test_file;             // JSONL; default data/tasks/<task>/test.jsonl
    std::string labels;                // comma-separated label set; default from task.json
    int rank = 0;                      // r_k; 0 = from resource
    std::string resource = "high";     // low | medium | high -> R/4, R/2, R
    std::string shard;                 // "K/N": train on examples K, K+N, K+2N, ... (disjoint splits)
    int64_t train_examples = 0;        // cap (0 = all), applied after sharding
    int64_t test_examples = 0;         // cap (0 = all)
    double lr = 2e-4;
    double weight_decay = 0.0;
    int batch_size = 16;
    int local_epochs = 1;
    int64_t local_steps = 0;           // if > 0, steps per round instead of epochs
    int max_seq_len = 128;
    int ranks_per_client = 1;          // data-parallel group size

    int effective_rank(int max_rank) const;
    // The parsed shard (index, count); (0, 1) when unset. Validated when the job is loaded.
    std::pair<int64_t, int64_t> shard_of() const;
};

struct JobConfig {
    RunConfig run;
    FederationConfig federation;
    std::vector<ClientConfig> clients;
    std::string source;                          // the job file path ("" when none)
    std::map<std::string, std::string> resolved; // every key -> final value (written to HDF5)
};

// key -> value given on the command line (e.g. "run.rounds" -> "3").
using ConfigOverrides = std::vector<std::pair<std::string, std::string>>;

// Reads and validates a job file, applying `overrides` on top. Throws ConfigError naming the key
// and "file:line" (or "command line") for unknown keys, syntax errors and bad values.
JobConfig load_job_config(const std::string& path, const ConfigOverrides& overrides = {});
// Same, from text already in memory; `source` names it in messages.
JobConfig parse_job_config(const std::string& text, const std::string& source,
                           const ConfigOverrides& overrides = {});

// The canonical "key = value" rendering of the resolved configuration (sorted, one per line).
std::string job_config_to_ini(const JobConfig& config);

// The methods `run.method` accepts, and what each implies: core/methods.h.

}  // namespace h2tune
