// The job the round-message fuzz target decodes for, shared with the seed writer so that the
// seeds are messages of exactly that job: 4 clients, an H2Tune bank of 3 slots x 2 modules with
// R = 4, client k of rank k + 1 (client 3 with a dense exchange).
#pragma once

#include <cstdint>
#include <string>

#include "h2tune/app/round_messages.h"
#include "h2tune/core/error.h"

namespace h2tune_fuzz {

constexpr size_t kClients = 4;
constexpr int kRound = 1;
inline const h2tune::BankShape kBank{3, 2, 4};

// The decoders, chosen by the first byte of a fuzz input (modulo kDecoderCount).
enum Decoder : uint8_t {
    kMaskAnnouncements, kLoraDescriptions, kLoraGroups, kClientInfos, kDownloadH2Tune, kDownloadLora,
    kUploadHeader, kUploadValuesH2Tune, kUploadValuesDense, kUploadValuesLora, kReport, kDecision,
    kCheckpointFiles, kCheckpointChoice, kDecoderCount
};

inline h2tune::BankLayout layout_of(int client) {
    if (client < 0 || static_cast<size_t>(client) >= kClients)
        throw h2tune::MessageError("download: client " + std::to_string(client) + " is not hosted here");
    const int64_t rank = client + 1;
    return h2tune::BankLayout{kBank.global_layers, kBank.modules, rank * rank, kBank.max_rank, client == 3};
}

inline h2tune::UploadLayout upload_layout(h2tune::MethodFamily family, bool dense) {
    return h2tune::UploadLayout{family, kBank.global_layers, kBank.modules, kBank.max_rank, dense};
}

}  // namespace h2tune_fuzz
