// Rank 0's side of a federated run behind one small interface, whichever method family runs:
// what each participant receives at the start of a round, whether an upload is accepted (a
// reason when not, never an exception), the round's aggregation, and the state a checkpoint
// keeps. The H2Tune server (method/h2tune_server.h) and the LoRA-baseline server
// (method/lora_server.h) hold the state; this layer only maps them onto the round messages.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "h2tune/app/round_messages.h"
#include "h2tune/core/job_config.h"

namespace h2tune {

class FederationServer {
public:
    virtual ~FederationServer() = default;
    virtual MethodFamily family() const = 0;
    // Start of a round (not of one continued after a resume), before the downloads.
    virtual void begin_round(int round, const std::vector<bool>& participating) = 0;
    // Fills what participating client k receives this round; false when it receives nothing.
    virtual bool download_for(size_t client, DownloadRecord& out) = 0;
    // How the values of an upload record are laid out.
    virtual UploadLayout upload_layout() const = 0;
    // Keeps the decoded values of `record` for aggregate() and fills its row's exchange columns
    // (bytes_up, mask_density); "" when accepted, else why it was refused.
    virtual std::string accept(UploadRecord& record, int round) = 0;
    // Aggregates the uploads accepted this round.
    virtual void aggregate() = 0;
    // Columns rank 0 alone knows (H2Tune: mask_changed), written into every client's row.
    virtual void fill_server_columns(std::vector<ClientMetricsRow>& rows) const = 0;
    virtual TensorMap state() const = 0;
    virtual void load_state(const TensorMap& state) = 0;
};

// `masks` from every client's announcement (decoded). `dense` and the refresh settings come from
// the method and the job.
std::unique_ptr<FederationServer> make_h2tune_server(const BankShape& shape, const std::vector<MaskAnnouncement>& masks,
                                                     size_t num_clients, const MethodSpec& method,
                                                     const FederationConfig& federation);
std::unique_ptr<FederationServer> make_lora_server(LoraServer server, double max_abs_value);

}  // namespace h2tune
