// What every fuzz target asserts: a parser given arbitrary bytes either succeeds or throws an
// h2tune::Error subclass naming the problem. Any other exception (nlohmann::json's, std::out_of_range,
// std::bad_alloc from a size taken on trust, c10::Error) is a finding: it is printed and the
// process aborts, so libFuzzer records the input. Crashes, sanitizer reports and hangs are
// findings by themselves.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "h2tune/core/error.h"

namespace h2tune_fuzz {

template <class Parse>
void expect_success_or_h2tune_error(const char* what, Parse&& parse) {
    try {
        parse();
    } catch (const h2tune::Error&) {
        // The expected outcome for bad input.
    } catch (const std::exception& e) {
        std::fprintf(stderr, "FINDING: %s threw a non-h2tune exception: %s\n", what, e.what());
        std::abort();
    } catch (...) {
        std::fprintf(stderr, "FINDING: %s threw something that is not a std::exception\n", what);
        std::abort();
    }
}

inline std::string as_text(const uint8_t* data, size_t size) {
    return std::string(reinterpret_cast<const char*>(data), size);
}

}  // namespace h2tune_fuzz
