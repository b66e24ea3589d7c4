// Training and test data (data/example.h): parse_jsonl on arbitrary text. The first byte picks the
// example limit (0 = all) so that the early stop is exercised too.
#include "fuzz_common.h"
#include "h2tune/data/example.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const int64_t limit = data[0] % 8;
    h2tune_fuzz::expect_success_or_h2tune_error("parse_jsonl", [&] {
        const auto examples = h2tune::parse_jsonl(h2tune_fuzz::as_text(data + 1, size - 1), "fuzz.jsonl", limit);
        (void)h2tune::majority_rate(examples);
        (void)h2tune::distinct_outputs(examples);
        for (const auto& e : examples) (void)(h2tune::prompt_head(e) + h2tune::prompt_tail());
    });
    return 0;
}
