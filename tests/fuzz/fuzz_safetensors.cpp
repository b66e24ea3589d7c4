// safetensors headers (model/safetensors.h): the input is the start of a file of exactly its size,
// so the tiling of the data section by the tensors' offsets is checked as well.
#include "fuzz_common.h"
#include "h2tune/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    h2tune_fuzz::expect_success_or_h2tune_error("safetensors_parse_header", [&] {
        const h2tune::SafetensorsHeader header =
            h2tune::safetensors_parse_header(h2tune_fuzz::as_text(data, size), "fuzz.safetensors", size);
        // What a loader relies on: every tensor lies inside the file and its bytes match its shape.
        for (const auto& [name, entry] : header.entries) {
            if (entry.begin < 0 || entry.end < entry.begin ||
                header.data_start + static_cast<uint64_t>(entry.end) > size) {
                std::fprintf(stderr, "FINDING: tensor '%s' accepted outside the file\n", name.c_str());
                std::abort();
            }
        }
    });
    return 0;
}
