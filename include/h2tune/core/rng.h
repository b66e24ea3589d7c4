// Deterministic random streams. Every stream in h2tune is keyed by (seed, round, client, purpose)
// so that results do not depend on the number of ranks or the order clients are visited in.
// The generator is our own (SplitMix64) rather than std::shuffle/std::uniform_*: their algorithms
// are unspecified and differ between standard libraries, which would break bit-exact resume.
#pragma once

#include <cstdint>
#include <vector>

namespace h2tune {

// Well-mixed 64-bit key from a seed and up to three stream coordinates.
uint64_t stream_key(uint64_t seed, uint64_t a = 0, uint64_t b = 0, uint64_t c = 0);

class SplitMix64 {
public:
    explicit SplitMix64(uint64_t state) : state_(state) {}
    uint64_t next();
    // Uniform integer in [0, bound) without modulo bias; bound > 0.
    uint64_t below(uint64_t bound);
    // Uniform double in [0, 1) with 53 random bits.
    double uniform();
    uint64_t state() const { return state_; }
    void set_state(uint64_t s) { state_ = s; }

private:
    uint64_t state_;
};

// Fisher-Yates permutation of 0..n-1 drawn from `key`.
std::vector<int64_t> permutation(int64_t n, uint64_t key);

}  // namespace h2tune
