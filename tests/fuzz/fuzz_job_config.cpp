// Job files (core/job_config.h): parse_job_config on arbitrary text.
#include "fuzz_common.h"
#include "h2tune/core/job_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    h2tune_fuzz::expect_success_or_h2tune_error("parse_job_config", [&] {
        const h2tune::JobConfig config = h2tune::parse_job_config(h2tune_fuzz::as_text(data, size), "fuzz.ini");
        // A job that parsed must render (the canonical form is what runs record).
        (void)h2tune::job_config_to_ini(config);
    });
    return 0;
}
