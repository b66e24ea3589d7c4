// The messages between ranks (app/round_messages.h, core/wire.h): every decoder, chosen by the
// first input byte, on the rest of the input. A decoder must return or throw MessageError (an
// h2tune::Error); it must never read past the buffer, trust a length or shape it did not check,
// or allocate what the message merely claims.
#include "fuzz_common.h"
#include "round_messages_setup.h"

#include <torch/torch.h>

using namespace h2tune;
using namespace h2tune_fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const auto decoder = static_cast<Decoder>(data[0] % kDecoderCount);
    const Bytes message(data + 1, data + size);
    expect_success_or_h2tune_error("round message decoder", [&] {
        switch (decoder) {
            case kMaskAnnouncements: (void)decode_mask_announcements(message, "rank 1", kClients, kBank); break;
            case kLoraDescriptions: (void)decode_lora_descriptions(message, "rank 1", kClients); break;
            case kLoraGroups: (void)decode_lora_groups(message, kClients); break;
            case kClientInfos: (void)decode_client_infos(message, "rank 1", kClients); break;
            case kDownloadH2Tune: (void)decode_download(message, MethodFamily::kH2Tune, layout_of); break;
            case kDownloadLora: (void)decode_download(message, MethodFamily::kLoraBaseline, layout_of); break;
            case kUploadHeader: (void)decode_upload_header(message); break;
            case kUploadValuesH2Tune:
            case kUploadValuesDense:
            case kUploadValuesLora: {
                UploadRecord record = decode_upload_header(message);
                if (record.values == MethodFamily::kLocal) break;
                const MethodFamily family =
                    decoder == kUploadValuesLora ? MethodFamily::kLoraBaseline : MethodFamily::kH2Tune;
                decode_upload_values(message, upload_layout(family, decoder == kUploadValuesDense), record);
                break;
            }
            case kReport: {
                // Rank 0 decodes each record of a report on its own.
                const RoundReport report = decode_report(message, "rank 1");
                for (const Bytes& record : report.records)
                    expect_success_or_h2tune_error("upload record in a report", [&] {
                        UploadRecord u = decode_upload_header(record);
                        if (u.values != MethodFamily::kLocal)
                            decode_upload_values(record, upload_layout(MethodFamily::kH2Tune, false), u);
                    });
                break;
            }
            case kDecision: (void)decode_decision(message, kRound); break;
            case kCheckpointFiles: (void)decode_checkpoint_files(message, "rank 1"); break;
            case kCheckpointChoice: (void)decode_checkpoint_choice(message); break;
            case kDecoderCount: break;
        }
    });
    return 0;
}
