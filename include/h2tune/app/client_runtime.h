// Everything one client needs on its rank: base model with adapters, tokenizer, encoded data,
// label set, optimiser and data cursor. Built from a ClientConfig; knows nothing of MPI or HDF5.
#pragma once

#include <csignal>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "h2tune/app/base_model_pool.h"
#include "h2tune/core/job_config.h"
#include "h2tune/core/methods.h"
#include "h2tune/data/loader.h"
#include "h2tune/method/h2tune_server.h"
#include "h2tune/method/lora_server.h"
#include "h2tune/method/shared_middle.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"
#include "h2tune/train/adapted_model.h"
#include "h2tune/train/alternating.h"
#include "h2tune/train/evaluate.h"
#include "h2tune/train/finetune.h"

namespace h2tune {

// Resolved locations of a client's model, tokenizer and data (relative to the working directory).
struct ClientPaths {
    std::string model_dir, tokenizer, train_file, test_file, task_file;
};
ClientPaths resolve_client_paths(const ClientConfig& client);

// LoRA baselines: clients with equal signatures form a group (the architecture and adapted
// modules, plus the rank for the rules that average factors of equal shape).
std::string lora_group_signature(const LlamaConfig& config, const std::vector<std::string>& modules, int64_t rank,
                                 const MethodSpec& method);

struct ClientRoundMetrics {
    double train_loss = 0;
    double test_accuracy = 0;
    double test_accuracy_generate = -1;
    double test_accuracy_no_download = -1;  // federation.eval_probes (round_messages.h ClientMetricsRow)
    double test_accuracy_no_middle = -1;
    double tokens = 0;
    double train_seconds = 0;
    double eval_seconds = 0;
    double steps = 0;
};

// Where a client is inside the current round: checkpoints taken on a signal store it, so that a
// resumed run continues at the next step with the same loss sums and byte counts.
struct RoundProgress {
    int64_t steps_done = 0;
    double loss_sum = 0;
    double tokens = 0;
    double train_seconds = 0;
    double bytes_down = 0;
};

class ClientRuntime {
public:
    // `global_layers` is L_g (used by the h2tune methods; ignored by local). The model, adapters
    // and shared parameters live on `device`; everything the client hands out is on the CPU.
    // With a `pool` (and run.share_base_models), the frozen base and the tokenizer come from it
    // and are shared with the rank's other clients of the same files — except for methods that
    // change the base (FLoRA merges into W0), whose clients always load their own.
    ClientRuntime(const JobConfig& job, int client_index, int64_t global_layers = 0,
                  torch::Device device = torch::kCPU, BaseModelPool* pool = nullptr);

    bool shares_middle() const { return shared_ != nullptr; }
    const SharedMiddle* shared() const { return shared_.get(); }
    // Start of an H2Tune round: re-selected masks first (mask_refresh), then the bank slices
    // G[:, m, Omega_m] ([L_g, M, r^2]). h2tune-dense: the reference implementation's traffic with
    // the method's semantics: the client receives the whole bank (keeps it, uses its mask's
    // slices) and uploads its personalised R x R matrices sum_j Pi[j,l] G^j with its T values at
    // its mask entries.
    void apply_bank_download(const BankDownload& download);
    bool dense_exchange() const { return dense_; }
    // After an H2Tune round: relation, T values ([L_k, M, r^2]; dense: [L_k, M, R*R]), sample
    // count and, when `with_taylor`, the Taylor statistics for rank 0's mask re-selection.
    BankUpload bank_upload(bool with_taylor) const;

    // LoRA baselines (fedit, ffa, fedsa, hetlora, flexlora, flora).
    bool is_lora_baseline() const { return lora_; }
    const std::string& lora_signature() const { return lora_signature_; }
    // The factors the method uploads ("A/<i>", "B/<i>") with the sample count, and every factor's shape.
    LoraUpload lora_upload() const;
    std::map<std::string, std::vector<int64_t>> lora_factor_shapes() const;
    double lora_scale() const { return adapted_.alpha / static_cast<double>(adapted_.rank); }
    // Applies a download at the start of `round`: factors are copied in; FLoRA stacks are merged
    // into W0 and the LoRA restarts (fresh A drawn from (seed, round, client), B = 0, new moments).
    void apply_lora_download(const TensorMap& download, int round);

    // Starts a round: no steps done yet.
    void begin_round() { progress_ = RoundProgress{}; }
    void set_bytes_down(double bytes) { progress_.bytes_down = bytes; }
    const RoundProgress& progress() const { return progress_; }
    // Trains the rest of the round (local_steps, or local_epochs over the training split) from
    // progress(). When `*stop` becomes non-zero it returns false after the step in flight, with
    // progress() telling where it stopped (alternate = epoch only stops at the round's end: its
    // teachers are not worth a checkpoint). True when the round's training is complete.
    bool train_round(int round, const volatile std::sig_atomic_t* stop = nullptr);
    bool round_trained() const { return progress_.steps_done >= steps_per_round_; }
    // A client over several ranks (app/client_placement.h): this rank is member `member` of
    // `members`. Every step then trains on the member's part of the batch, the gradients are
    // summed through `sync` before the optimisers step, and a stop request ends the round after
    // the same step on every member; evaluation is split over the members as well.
    void set_data_parallel(std::unique_ptr<GradientSync> sync, int member, int members);
    // Called after every optimiser step with (round, steps done in the round); tests use it.
    void set_step_hook(std::function<void(int, int64_t)> hook) { step_hook_ = std::move(hook); }
    // The round's training metrics so far (loss, tokens, seconds).
    ClientRoundMetrics round_metrics() const;
    // Evaluates on the client's test split and fills the accuracy fields of `m`. Data parallel:
    // collective over the group (each member scores its share of the examples).
    void evaluate(ClientRoundMetrics& m);

    const ClientConfig& config() const { return config_; }
    const FederationConfig& federation() const { return federation_; }
    double majority_rate() const { return majority_rate_; }
    int64_t train_size() const { return loader_->size(); }
    int64_t test_size() const { return static_cast<int64_t>(test_encoded_.size()); }
    int64_t steps_per_round() const { return steps_per_round_; }
    int64_t rank() const { return adapted_.rank; }
    int64_t num_layers() const { return adapted_.model->num_layers(); }
    int64_t trainable_parameters() const;
    // The client's model with its own adapters attached (activated: the base may be shared).
    AdaptedModel& adapted() {
        adapted_.activate();
        return adapted_;
    }
    bool shares_base_model() const { return shares_base_; }
    const std::string& model_dir() const { return paths_.model_dir; }
    // The base model's files as loaded (io/file_fingerprint.h): checkpoints record it so that a
    // resume on replaced weights is refused.
    const std::string& base_model_fingerprint() const { return base_model_fingerprint_; }

    // Everything that changes while training, as named tensors: adapter factors, shared middle
    // state (relation logits, masks, residual, received slices, Taylor statistics), optimiser
    // moments, data cursor and round progress. No draw uses a generator's running state: every
    // random stream is a function of (seed, round or epoch, client) plus the data cursor, so this
    // is all a restored client needs to continue bit-identically (same threads).
    std::map<std::string, torch::Tensor> state() const;
    void load_state(const std::map<std::string, torch::Tensor>& state);

private:
    void load_model(BaseModelPool* pool);
    void release_gradients();  // after a round: a client's gradients need not stay resident
    void activate();  // this client's adapters and forward settings on the (possibly shared) model
    EvalResult score_test_split(const EvalOptions& options);  // data parallel: the group's counts summed
    void evaluate_probes(ClientRoundMetrics& m);              // federation.eval_probes
    void load_data();
    void build_trainer(const JobConfig& job, int64_t global_layers);
    void receive_slices(const torch::Tensor& slices);
    void receive_dense_bank(const torch::Tensor& bank);
    torch::Tensor dense_values(const torch::Tensor& values) const;  // [L_k, M, r^2] -> [L_k, M, R*R]

    ClientConfig config_;
    FederationConfig federation_;
    ClientPaths paths_;
    std::string base_model_fingerprint_;
    std::shared_ptr<const BpeTokenizer> tokenizer_;
    bool shares_base_ = false;                    // the base came from a BaseModelPool
    AdaptedModel adapted_;
    std::unique_ptr<DataLoader> loader_;
    std::vector<EncodedExample> test_encoded_;
    std::vector<std::string> test_references_;
    LabelSet labels_;
    MethodSpec method_;
    std::unique_ptr<SharedMiddle> shared_;        // h2tune methods only
    bool lora_ = false;                           // a LoRA baseline
    torch::Device device_ = torch::kCPU;
    bool dense_ = false;                          // h2tune-dense
    torch::Tensor dense_bank_;                    // h2tune-dense: the bank received this round
    std::string lora_signature_;
    uint64_t seed_ = 0;
    std::unique_ptr<AlternatingTrainer> trainer_;
    std::unique_ptr<GradientSync> sync_;          // data parallel over a group of ranks
    int member_ = 0, members_ = 1;
    double majority_rate_ = 0;
    int64_t steps_per_round_ = 0;
    RoundProgress progress_;
    std::function<void(int, int64_t)> step_hook_;
};

}  // namespace h2tune
