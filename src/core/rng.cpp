#include "h2tune/core/rng.h"

#include <cstddef>
#include <numeric>
#include <utility>

namespace h2tune {

namespace {
uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
}  // namespace

uint64_t stream_key(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t k = mix(seed + 0x9e3779b97f4a7c15ULL);
    k = mix(k ^ (a + 0x632be59bd9b4e019ULL));
    k = mix(k ^ (b + 0x8cb92ba72f3d8dd7ULL));
    return mix(k ^ (c + 0xd1b54a32d192ed03ULL));
}

uint64_t SplitMix64::next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return mix(state_);
}

uint64_t SplitMix64::below(uint64_t bound) {
    // Lemire-style rejection: discard the short top range so every value is equally likely.
    const uint64_t threshold = (0 - bound) % bound;
    for (;;) {
        uint64_t r = next();
        if (r >= threshold) return r % bound;
    }
}

double SplitMix64::uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }

std::vector<int64_t> permutation(int64_t n, uint64_t key) {
    std::vector<int64_t> p(static_cast<std::size_t>(n));
    std::iota(p.begin(), p.end(), 0);
    SplitMix64 rng(key);
    for (int64_t i = n - 1; i > 0; --i) {
        int64_t j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i + 1)));
        std::swap(p[static_cast<std::size_t>(i)], p[static_cast<std::size_t>(j)]);
    }
    return p;
}

}  // namespace h2tune
