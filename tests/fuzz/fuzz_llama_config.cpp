// config.json (model/llama_config.h): llama_config_parse on arbitrary text; a config that parses
// must also count its parameters, render and parse back to itself.
#include "fuzz_common.h"
#include "h2tune/model/llama_config.h"

#include <nlohmann/json.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    h2tune_fuzz::expect_success_or_h2tune_error("llama_config_parse", [&] {
        const h2tune::LlamaConfig config = h2tune::llama_config_parse(h2tune_fuzz::as_text(data, size), "config.json");
        const std::string text = config.to_json().dump();
        const h2tune::LlamaConfig again = h2tune::LlamaConfig::from_json(nlohmann::json::parse(text));
        if (again.to_json().dump() != text) {
            std::fprintf(stderr, "FINDING: config.json does not round-trip:\n%s\n%s\n", text.c_str(),
                         again.to_json().dump().c_str());
            std::abort();
        }
        (void)h2tune::llama_parameter_count(config);
    });
    return 0;
}
