#include "h2tune/app/federation_server.h"

#include <torch/torch.h>

#include "h2tune/core/error.h"

namespace h2tune {

namespace {

class H2TuneFederationServer : public FederationServer {
public:
    H2TuneFederationServer(H2TuneServer server, const FederationConfig& f)
        : server_(std::move(server)), refresh_every_(f.mask_refresh), taylor_score_(f.mask_score == "taylor") {}

    MethodFamily family() const override { return MethodFamily::kH2Tune; }

    void begin_round(int round, const std::vector<bool>& participating) override {
        server_.refresh_masks(round, refresh_every_, taylor_score_, participating);
    }

    bool download_for(size_t k, DownloadRecord& out) override {
        if (!server_.delivers_to(k)) return false;
        out.bank = server_.download_for(k);
        return true;
    }

    UploadLayout upload_layout() const override {
        const BankShape& s = server_.shape();
        return UploadLayout{MethodFamily::kH2Tune, s.global_layers, s.modules, s.max_rank, server_.dense()};
    }

    std::string accept(UploadRecord& record, int round) override {
        const auto k = static_cast<size_t>(record.client);
        const int64_t rank = record.bank.rank;
        const std::string why = server_.accept(std::move(record.bank));
        if (!why.empty()) return why;
        const double R2 = static_cast<double>(server_.shape().max_rank * server_.shape().max_rank);
        // The masks travel once, with round 0's upload.
        record.row.bytes_up = record.value_bytes + (round == 0 ? server_.slot(k).mask_bytes : 0.0);
        record.row.mask_density = static_cast<double>(rank * rank) / R2;
        return "";
    }

    void aggregate() override { server_.aggregate(); }

    void fill_server_columns(std::vector<ClientMetricsRow>& rows) const override {
        for (size_t k = 0; k < rows.size(); ++k) rows[k].mask_changed = server_.slot(k).mask_changed;
    }

    TensorMap state() const override { return server_.state(); }
    void load_state(const TensorMap& state) override { server_.load_state(state); }

private:
    H2TuneServer server_;
    int64_t refresh_every_ = 0;
    bool taylor_score_ = false;
};

class LoraFederationServer : public FederationServer {
public:
    LoraFederationServer(LoraServer server, double max_abs_value)
        : server_(std::move(server)), max_abs_value_(max_abs_value) {}

    MethodFamily family() const override { return MethodFamily::kLoraBaseline; }
    void begin_round(int, const std::vector<bool>&) override {}

    bool download_for(size_t k, DownloadRecord& out) override {
        TensorMap& pending = server_.pending.at(k);
        if (pending.empty()) return false;
        out.lora = std::move(pending);
        pending.clear();  // delivered; the next aggregation sets it again
        return true;
    }

    UploadLayout upload_layout() const override { return UploadLayout{MethodFamily::kLoraBaseline, 0, 0, 0, false}; }

    std::string accept(UploadRecord& record, int) override {
        const std::string why = server_.validate(record.lora, max_abs_value_);
        if (!why.empty()) return why;
        record.row.bytes_up = record.value_bytes;
        accepted_.push_back(std::move(record.lora));
        return "";
    }

    void aggregate() override {
        std::vector<const LoraUpload*> uploads;
        for (const auto& u : accepted_) uploads.push_back(&u);
        server_.aggregate(uploads);
        accepted_.clear();
    }

    void fill_server_columns(std::vector<ClientMetricsRow>&) const override {}
    TensorMap state() const override { return server_.state(); }
    void load_state(const TensorMap& state) override { server_.load_state(state); }

private:
    LoraServer server_;
    double max_abs_value_ = 0;
    std::vector<LoraUpload> accepted_;
};

}  // namespace

std::unique_ptr<FederationServer> make_h2tune_server(const BankShape& shape, const std::vector<MaskAnnouncement>& masks,
                                                     size_t num_clients, const MethodSpec& method,
                                                     const FederationConfig& federation) {
    H2TuneServer server(shape, num_clients, method.dense, federation.max_abs_value);
    for (const auto& a : masks) server.announce_masks(static_cast<size_t>(a.client), a.masks, a.bytes);
    return std::make_unique<H2TuneFederationServer>(std::move(server), federation);
}

std::unique_ptr<FederationServer> make_lora_server(LoraServer server, double max_abs_value) {
    return std::make_unique<LoraFederationServer>(std::move(server), max_abs_value);
}

}  // namespace h2tune
