// FNV-1a 64: the project's checksum of bytes (checkpoint files, base-model fingerprints, LoRA
// group signatures). Not cryptographic: it detects truncation and corruption, not tampering.
#pragma once

#include <cstddef>
#include <cstdint>

namespace h2tune {

struct Fnv1a64 {
    uint64_t value = 1469598103934665603ULL;
    void add(const void* data, std::size_t n) {
        const auto* p = static_cast<const unsigned char*>(data);
        for (std::size_t i = 0; i < n; ++i) value = (value ^ p[i]) * 1099511628211ULL;
    }
};

}  // namespace h2tune
