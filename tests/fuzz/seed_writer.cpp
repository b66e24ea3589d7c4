// Writes the binary seeds of tests/fuzz/corpus: one valid message per round-message decoder (the
// decoder byte, then the message its encoder produced) and small safetensors files. Run once by
// hand when a format changes:  build/fuzz/fuzz_seed_writer tests/fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <torch/torch.h>

#include "h2tune/model/safetensors.h"
#include "round_messages_setup.h"

using namespace h2tune;
using namespace h2tune_fuzz;
namespace fs = std::filesystem;

namespace {

void write_seed(const fs::path& dir, const std::string& name, Decoder decoder, const Bytes& message) {
    fs::create_directories(dir);
    std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
    const char selector = static_cast<char>(decoder);
    out.write(&selector, 1);
    out.write(reinterpret_cast<const char*>(message.data()), static_cast<std::streamsize>(message.size()));
}

torch::Tensor ramp(std::vector<int64_t> shape) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return torch::arange(n, torch::kFloat32).reshape(shape) / 8.0;
}

// Client k's mask: the first r^2 flat indices of the R x R matrix, per module.
torch::Tensor mask_of(int client) {
    const int64_t entries = (client + 1) * (client + 1);
    return torch::arange(entries, torch::kInt64).repeat({kBank.modules, 1});
}

UploadRecord h2tune_upload(int client, bool dense) {
    UploadRecord u;
    u.client = client;
    u.row.train_loss = 1.5;
    u.row.participated = 1;
    u.values = MethodFamily::kH2Tune;
    const int64_t rank = client + 1, layers = 2;
    u.bank.samples = 16;
    u.bank.rank = rank;
    u.bank.relation = ramp({kBank.global_layers, layers});
    u.bank.values = ramp({layers, kBank.modules, dense ? kBank.max_rank * kBank.max_rank : rank * rank});
    u.bank.taylor = ramp({kBank.modules, rank * rank});
    u.bank.grad_scale = ramp({kBank.modules});
    return u;
}

void write_round_messages(const fs::path& dir) {
    std::vector<MaskAnnouncement> masks;
    for (int k = 0; k < 2; ++k) masks.push_back({k, mask_of(k), 0});
    write_seed(dir, "mask_announcements", kMaskAnnouncements, encode_mask_announcements(masks));

    LoraDescription d;
    d.client = 1;
    d.signature = "llama h128 l4";
    d.scale = 2.0;
    d.factor_shapes = {{"A/0", {4, 128}}, {"B/0", {128, 4}}};
    write_seed(dir, "lora_descriptions", kLoraDescriptions, encode_lora_descriptions({d}));
    write_seed(dir, "lora_groups", kLoraGroups, encode_lora_groups({0, -1, 0, 1}));

    ClientInfo info;
    info.client = 2;
    info.majority_rate = 0.5;
    info.rank = 3;
    info.layers = 4;
    write_seed(dir, "client_infos", kClientInfos, encode_client_infos({info}));

    DownloadRecord bank;
    bank.client = 1;
    bank.bank.new_masks = mask_of(1);
    bank.bank.values = ramp({kBank.global_layers, kBank.modules, 4});
    DownloadRecord dense;
    dense.client = 3;
    dense.bank.values = ramp({kBank.global_layers, kBank.modules, kBank.max_rank * kBank.max_rank});
    write_seed(dir, "download_h2tune", kDownloadH2Tune, encode_download(MethodFamily::kH2Tune, {bank, dense}));
    DownloadRecord lora;
    lora.client = 0;
    lora.lora = {{"A/0", ramp({2, 3})}, {"B/0", ramp({3, 2})}};
    write_seed(dir, "download_lora", kDownloadLora, encode_download(MethodFamily::kLoraBaseline, {lora}));

    UploadRecord local;
    local.client = 0;
    write_seed(dir, "upload_header", kUploadHeader, encode_upload_record(local));
    write_seed(dir, "upload_values_h2tune", kUploadValuesH2Tune, encode_upload_record(h2tune_upload(2, false)));
    write_seed(dir, "upload_values_dense", kUploadValuesDense, encode_upload_record(h2tune_upload(3, true)));
    UploadRecord lora_up;
    lora_up.client = 1;
    lora_up.values = MethodFamily::kLoraBaseline;
    lora_up.lora.samples = 8;
    lora_up.lora.factors = {{"A/0", ramp({2, 3})}};
    write_seed(dir, "upload_values_lora", kUploadValuesLora, encode_upload_record(lora_up));

    RoundReport report;
    report.round = kRound;
    report.records = {encode_upload_record(h2tune_upload(1, false)), encode_upload_record(local)};
    write_seed(dir, "report", kReport, encode_report(report));
    write_seed(dir, "decision", kDecision, encode_decision({kRound, RoundDecision::kCheckpointInRound, true}));
    write_seed(dir, "checkpoint_files", kCheckpointFiles,
               encode_checkpoint_files({{"server.h5", 1234, 99}, {"client_0000.h5", 10, 7}}));
    CheckpointChoice choice;
    choice.found = true;
    choice.info.dir = "out/checkpoints/r000002.0";
    choice.info.next_round = 2;
    write_seed(dir, "checkpoint_choice", kCheckpointChoice, encode_checkpoint_choice(choice));
}

void write_safetensors(const fs::path& dir) {
    fs::create_directories(dir);
    safetensors_save((dir / "two_tensors.safetensors").string(),
                     {{"model.embed_tokens.weight", ramp({4, 2})}, {"model.norm.weight", ramp({2})}},
                     {{"format", "pt"}});
    safetensors_save((dir / "dtypes.safetensors").string(),
                     {{"a", torch::ones({2}, torch::kBFloat16)}, {"b", torch::zeros({1, 3}, torch::kInt8)},
                      {"c", torch::ones({2}, torch::kBool)}, {"d", torch::zeros({0, 4}, torch::kFloat16)},
                      {"e", torch::ones({1}, torch::kFloat64)}});
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s CORPUS_ROOT (tests/fuzz/corpus)\n", argv[0]);
        return 2;
    }
    const fs::path root = argv[1];
    write_round_messages(root / "round_messages");
    write_safetensors(root / "safetensors");
    return 0;
}
