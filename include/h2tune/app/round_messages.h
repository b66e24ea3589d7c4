// Every message `h2tune train` sends between ranks, as plain structs with their encoder and
// decoder side by side, and every point-to-point tag. A message starts with an envelope (magic,
// protocol version, kind), so a mismatched build or a stray buffer is refused by name; a message
// that cannot be decoded throws MessageError (exit code 1), naming its kind and sender. Clients'
// upload records are length-prefixed inside a report, so one corrupted record is refused alone.
// Fault injection for tests works on these structs, outside the codec (app/fault_injection.h).
//
// A round: rank 0 posts each rank one Download (a record per participating client it hosts);
// every rank posts rank 0 one RoundReport (an upload record per hosted client); rank 0 answers
// each rank with a RoundDecision. Once at start (collectives): MaskAnnouncements (H2Tune) or
// LoraDescriptions and LoraGroups (LoRA baselines), and ClientInfo for /clients in metrics.h5.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "h2tune/comm/communicator.h"
#include "h2tune/core/methods.h"
#include "h2tune/io/checkpoint_dir.h"
#include "h2tune/method/h2tune_server.h"
#include "h2tune/method/lora_server.h"

namespace h2tune {

// Point-to-point tags; collectives (gather, broadcast) carry none.
enum MessageTag : int {
    kTagDownload = 41,  // rank 0 -> rank: the round's downloads for its clients
    kTagReport = 43,    // rank -> rank 0: the round's upload records and stop flags
    kTagDecision = 44,  // rank 0 -> rank: continue, checkpoint, or stop
};

constexpr uint16_t kProtocolVersion = 1;

enum class MessageKind : uint8_t {
    kMaskAnnouncement = 1,
    kDownload = 2,
    kReport = 3,
    kDecision = 4,
    kClientInfo = 5,
    kLoraDescription = 6,
    kLoraGroups = 7,
    kCheckpointFiles = 8,
    kCheckpointChoice = 9,
};
std::string message_kind_name(MessageKind kind);

// ------------------------------------------------------------------ metrics of a client's round

// One row of /metrics for one client: the datasets of metrics.h5, named.
struct ClientMetricsRow {
    double train_loss = 0;
    double test_accuracy = 0;
    double test_accuracy_generate = -1;
    double tokens = 0;
    double bytes_up = 0;
    double bytes_down = 0;
    double mask_density = 0;
    double train_seconds = 0;
    double eval_seconds = 0;
    double excluded = 0;
    double participated = 0;
    double mask_changed = 0;
    // federation.eval_probes (H2Tune methods; -1 otherwise): label-likelihood accuracy with every
    // middle matrix T replaced by this round's residual D (the downloaded mixture removed), and
    // with T = 0 (the adapter is plain LoRA B A).
    double test_accuracy_no_download = -1;
    double test_accuracy_no_middle = -1;
};
struct MetricColumn {
    const char* name;
    double ClientMetricsRow::*field;
};
// The /metrics datasets, in the order upload records carry them.
const std::vector<MetricColumn>& metric_columns();
// A row of a client that was not evaluated (sat the round out, or missed its deadline): every
// accuracy column NaN.
void clear_accuracies(ClientMetricsRow& row);
const std::vector<std::string>& client_metric_names();

// ------------------------------------------------------------------ start of a run

// H2Tune: a client's masks Omega_k [M, r_k^2] int64, announced once (indices travel as int32).
struct MaskAnnouncement {
    int32_t client = -1;
    torch::Tensor masks;
    double bytes = 0;  // decoded: the bytes the record took (counted in round 0's upload)
};
Bytes encode_mask_announcements(const std::vector<MaskAnnouncement>& announcements);
std::vector<MaskAnnouncement> decode_mask_announcements(const Bytes& message, const std::string& from,
                                                        size_t num_clients, const BankShape& shape);

// LoRA baselines: what rank 0 needs to group a client (method/lora_server.h).
struct LoraDescription {
    int32_t client = -1;
    std::string signature;
    double scale = 1.0;
    std::map<std::string, std::vector<int64_t>> factor_shapes;
};
Bytes encode_lora_descriptions(const std::vector<LoraDescription>& descriptions);
std::vector<LoraDescription> decode_lora_descriptions(const Bytes& message, const std::string& from, size_t num_clients);
// The group of every client (-1: alone), broadcast by rank 0.
Bytes encode_lora_groups(const std::vector<int>& groups);
std::vector<int> decode_lora_groups(const Bytes& message, size_t num_clients);

// What /clients in metrics.h5 records of a client.
struct ClientInfo {
    int32_t client = -1;
    double majority_rate = 0;
    int64_t rank = 0;
    int64_t layers = 0;
    int64_t adapter_parameters = 0;
    int64_t train_examples = 0;
    int64_t test_examples = 0;
    int64_t steps_per_round = 0;
    int32_t host_rank = 0;  // the rank hosting it (of a group of ranks: the group's leader)
    int32_t group_ranks = 1;  // ranks training it data parallel (client.N.ranks_per_client)
    int32_t device = -1;  // CUDA device index, -1 = CPU
    int64_t base_model_clients = 1;    // clients of the host rank holding this client's base in one copy (itself included)
    int64_t host_resident_bytes = -1;  // the host rank's resident memory once its clients were loaded (-1 unknown)
    std::string base_model;            // the base model's fingerprint (io/file_fingerprint.h): which weights these are
};
// The /clients datasets, in the order metrics.h5 has always written them.
const std::vector<std::pair<std::string, std::function<double(const ClientInfo&)>>>& client_info_columns();
Bytes encode_client_infos(const std::vector<ClientInfo>& infos);
std::vector<ClientInfo> decode_client_infos(const Bytes& message, const std::string& from, size_t num_clients);

// ------------------------------------------------------------------ a round

// A client's download: H2Tune bank slices (and re-selected masks), or what a LoRA baseline's
// group left pending for it.
struct DownloadRecord {
    int32_t client = -1;
    BankDownload bank;  // H2Tune
    TensorMap lora;     // LoRA baselines
    double bytes = 0;   // decoded: the bytes the record took (metrics: bytes_down)
};
// What a hosting rank expects of an H2Tune client's download.
struct BankLayout {
    int64_t global_layers = 0, modules = 0, entries = 0, max_rank = 0;
    bool dense = false;
};
Bytes encode_download(MethodFamily family, const std::vector<DownloadRecord>& records);
std::vector<DownloadRecord> decode_download(const Bytes& message, MethodFamily family,
                                            const std::function<BankLayout(int client)>& layout_of);

// What a client sends rank 0 after a round: its metrics row and, when it takes part in the
// exchange, its values (H2Tune: relation, T values, Taylor statistics; LoRA: factors).
struct UploadRecord {
    int32_t client = -1;
    ClientMetricsRow row;
    MethodFamily values = MethodFamily::kLocal;  // kLocal: the record carries no values
    BankUpload bank;
    LoraUpload lora;
    double value_bytes = 0;  // decoded: the bytes of the values (metrics: bytes_up)
};
// What rank 0 expects of H2Tune values.
struct UploadLayout {
    MethodFamily family = MethodFamily::kLocal;
    int64_t global_layers = 0, modules = 0, max_rank = 0;
    bool dense = false;
};
Bytes encode_upload_record(const UploadRecord& record);
// Bytes before an upload record's values: the client index, one double per metric column, and
// whether values follow.
size_t upload_header_bytes();
// The client id, metrics row and which values follow; throws MessageError.
UploadRecord decode_upload_header(const Bytes& record);
// The values after the header into `out` (decode_upload_header's result); throws MessageError
// ("upload record: ...") when they are truncated, mis-sized or followed by trailing bytes.
void decode_upload_values(const Bytes& record, const UploadLayout& layout, UploadRecord& out);

struct RoundReport {
    int32_t round = 0;
    bool stop_requested = false;  // a signal arrived on the rank
    bool interrupted = false;     // a client's training stopped inside the round
    std::vector<Bytes> records;   // encoded upload records, one per hosted client
};
Bytes encode_report(const RoundReport& report);
RoundReport decode_report(const Bytes& message, const std::string& from);

struct RoundDecision {
    enum Action : uint8_t { kContinue = 0, kCheckpointInRound = 1, kStopAfterRound = 2 };
    int32_t round = 0;
    uint8_t action = kContinue;
    bool checkpoint = false;  // write a checkpoint at the round boundary
};
Bytes encode_decision(const RoundDecision& decision);
// Throws MessageError when the decision is for another round than `round`.
RoundDecision decode_decision(const Bytes& message, int round);

// ------------------------------------------------------------------ checkpoints

Bytes encode_checkpoint_files(const std::vector<CheckpointFile>& files);
std::vector<CheckpointFile> decode_checkpoint_files(const Bytes& message, const std::string& from);
// Rank 0's choice of checkpoint to resume from; `found` false when there is none.
struct CheckpointChoice {
    bool found = false;
    CheckpointInfo info;  // dir, next_round, in_progress (files stay on rank 0)
};
Bytes encode_checkpoint_choice(const CheckpointChoice& choice);
CheckpointChoice decode_checkpoint_choice(const Bytes& message);

}  // namespace h2tune
