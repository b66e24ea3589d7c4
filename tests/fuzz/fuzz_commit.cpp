// Checkpoint commit markers (io/checkpoint_dir.h): parse_commit on arbitrary text. What resuming
// relies on: a parsed COMMIT never names a file outside its checkpoint directory.
#include <filesystem>

#include "fuzz_common.h"
#include "h2tune/io/checkpoint_dir.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    h2tune_fuzz::expect_success_or_h2tune_error("parse_commit", [&] {
        const h2tune::CheckpointInfo info =
            h2tune::parse_commit(h2tune_fuzz::as_text(data, size), "/ckpt/r000001.0", "COMMIT");
        if (info.next_round < 0) std::abort();
        for (const auto& f : info.files) {
            bool outside = f.name.empty() || f.name[0] == '/';
            for (const auto& part : std::filesystem::path(f.name)) outside |= part == "..";
            if (outside) {
                std::fprintf(stderr, "FINDING: COMMIT accepted file name '%s'\n", f.name.c_str());
                std::abort();
            }
        }
    });
    return 0;
}
