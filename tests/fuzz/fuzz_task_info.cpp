// A task's label set (data/example.h): parse_task_info on arbitrary task.json text.
#include "fuzz_common.h"
#include "h2tune/data/example.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    h2tune_fuzz::expect_success_or_h2tune_error("parse_task_info", [&] {
        (void)h2tune::parse_task_info(h2tune_fuzz::as_text(data, size), "task.json");
    });
    return 0;
}
