// Private to BpeTokenizer: memoises the ids of recently encoded pre-tokens. Natural text repeats a
// small set of words, so most pieces skip the merge loop entirely.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace h2tune {

class BpeWordCache {
public:
    BpeWordCache() = default;
    // A copy (or move) starts empty: the cache is derived data, and a mutex cannot be copied.
    BpeWordCache(const BpeWordCache&) noexcept {}
    BpeWordCache& operator=(const BpeWordCache&) noexcept {
        clear();
        return *this;
    }

    // Appends the cached ids of `word` to `out`; false when absent.
    bool lookup(std::string_view word, std::vector<int32_t>& out) const {
        std::lock_guard<std::mutex> lock(mutex_);
        const auto it = entries_.find(std::string(word));
        if (it == entries_.end()) return false;
        out.insert(out.end(), it->second.begin(), it->second.end());
        return true;
    }

    void insert(std::string_view word, const int32_t* ids, std::size_t count) {
        std::lock_guard<std::mutex> lock(mutex_);
        // Dropping everything when full bounds memory on adversarial input (no two words alike)
        // and costs little: the working set of a real corpus refills quickly.
        if (entries_.size() >= kMaxEntries) entries_.clear();
        entries_.emplace(std::string(word), std::vector<int32_t>(ids, ids + count));
    }

    void clear() noexcept {
        std::lock_guard<std::mutex> lock(mutex_);
        entries_.clear();
    }

    static constexpr std::size_t kMaxWordBytes = 64;  // longer pieces are rare and not cached

private:
    static constexpr std::size_t kMaxEntries = 1 << 17;
    mutable std::mutex mutex_;
    std::unordered_map<std::string, std::vector<int32_t>> entries_;
};

}  // namespace h2tune
