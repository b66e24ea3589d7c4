// Byte-level BPE training: count pre-token frequencies once, then repeatedly merge the most
// frequent adjacent pair. Pair counts are updated incrementally from the words that contain the
// merged pair, and a lazy max-heap finds the next pair, so each merge costs time proportional to
// the text it touches rather than to the corpus.
#include <algorithm>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "byte_level.h"
#include "h2tune/core/error.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"
#include "pre_tokenizer.h"

namespace h2tune {
namespace {

using PairKey = uint64_t;

PairKey pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}
int32_t left_of(PairKey key) { return static_cast<int32_t>(key >> 32); }
int32_t right_of(PairKey key) { return static_cast<int32_t>(key & 0xFFFFFFFFu); }

struct Word {
    std::vector<int32_t> symbols;
    int64_t count;
};

struct HeapEntry {
    int64_t count;
    PairKey pair;
};

class Trainer {
public:
    Trainer(const std::vector<std::string>& texts, const BpeTrainOptions& options) : options_(options) {
        for (int b = 0; b < 256; ++b) token_bytes_.emplace_back(1, static_cast<char>(b));
        count_words(texts);
        count_pairs();
    }

    void run(int32_t token_target) {
        const int32_t merges_wanted = token_target - 256;
        while (static_cast<int32_t>(token_bytes_.size()) < token_target) {
            PairKey best;
            if (!pop_best(best)) break;
            merge(best);
            if (options_.progress && merges_.size() % 256 == 0) {
                options_.progress(static_cast<int32_t>(merges_.size()), merges_wanted);
            }
        }
        if (options_.progress) options_.progress(static_cast<int32_t>(merges_.size()), merges_wanted);
    }

    BpeTokenizer result() const {
        std::unordered_map<std::string, int32_t> vocab;
        for (std::size_t id = 0; id < token_bytes_.size(); ++id) {
            vocab.emplace(tokenizer_detail::bytes_to_byte_level(token_bytes_[id]), static_cast<int32_t>(id));
        }
        std::vector<std::pair<std::string, std::string>> merges;
        merges.reserve(merges_.size());
        for (PairKey pair : merges_) {
            merges.emplace_back(tokenizer_detail::bytes_to_byte_level(token_bytes_[left_of(pair)]),
                                tokenizer_detail::bytes_to_byte_level(token_bytes_[right_of(pair)]));
        }
        return BpeTokenizer::from_parts(std::move(vocab), std::move(merges), options_.specials,
                                        options_.pre_tokenizer);
    }

private:
    void count_words(const std::vector<std::string>& texts) {
        std::unordered_map<std::string_view, int64_t> counts;
        for (const std::string& text : texts) {
            tokenizer_detail::for_each_piece(text, options_.pre_tokenizer,
                                             [&](std::string_view piece) { ++counts[piece]; });
        }
        // Sorted so that the word order, and with it every later step, is independent of hashing.
        std::vector<std::pair<std::string_view, int64_t>> sorted(counts.begin(), counts.end());
        std::sort(sorted.begin(), sorted.end());
        words_.reserve(sorted.size());
        for (const auto& [piece, count] : sorted) {
            if (piece.size() < 2) continue;  // holds no pair
            Word word{{}, count};
            for (char c : piece) word.symbols.push_back(static_cast<unsigned char>(c));
            words_.push_back(std::move(word));
        }
    }

    void count_pairs() {
        for (std::size_t w = 0; w < words_.size(); ++w) {
            const Word& word = words_[w];
            for (std::size_t i = 0; i + 1 < word.symbols.size(); ++i) {
                const PairKey pair = pair_key(word.symbols[i], word.symbols[i + 1]);
                pair_counts_[pair] += word.count;
                pair_words_[pair].push_back(static_cast<int32_t>(w));
            }
        }
        for (const auto& [pair, count] : pair_counts_) push(pair, count);
    }

    // Max-heap order: higher count first; on equal counts the smaller (left bytes, right bytes).
    bool heap_less(const HeapEntry& a, const HeapEntry& b) const {
        if (a.count != b.count) return a.count < b.count;
        const std::string& a_left = token_bytes_[left_of(a.pair)];
        const std::string& b_left = token_bytes_[left_of(b.pair)];
        if (a_left != b_left) return a_left > b_left;
        return token_bytes_[right_of(a.pair)] > token_bytes_[right_of(b.pair)];
    }

    void push(PairKey pair, int64_t count) {
        heap_.push_back(HeapEntry{count, pair});
        std::push_heap(heap_.begin(), heap_.end(), [this](const auto& a, const auto& b) { return heap_less(a, b); });
    }

    // Entries go stale when a count changes (a fresh entry is pushed then); they are skipped here.
    bool pop_best(PairKey& best) {
        const auto less = [this](const auto& a, const auto& b) { return heap_less(a, b); };
        while (!heap_.empty()) {
            std::pop_heap(heap_.begin(), heap_.end(), less);
            const HeapEntry top = heap_.back();
            heap_.pop_back();
            const auto current = pair_counts_.find(top.pair);
            if (current == pair_counts_.end() || current->second != top.count) continue;
            if (top.count < options_.min_frequency) return false;
            best = top.pair;
            return true;
        }
        return false;
    }

    int32_t merged_token(PairKey pair) {
        std::string bytes = token_bytes_[left_of(pair)] + token_bytes_[right_of(pair)];
        // Different pairs can spell the same bytes ("a"+"bc", "ab"+"c"); they share one token.
        const auto [it, inserted] = token_ids_.emplace(bytes, static_cast<int32_t>(token_bytes_.size()));
        if (inserted) token_bytes_.push_back(std::move(bytes));
        return it->second;
    }

    void merge(PairKey pair) {
        const int32_t merged = merged_token(pair);
        merges_.push_back(pair);
        std::vector<int32_t> word_ids = std::move(pair_words_[pair]);
        pair_words_.erase(pair);
        pair_counts_.erase(pair);
        std::sort(word_ids.begin(), word_ids.end());
        word_ids.erase(std::unique(word_ids.begin(), word_ids.end()), word_ids.end());
        deltas_.clear();
        for (int32_t w : word_ids) merge_in_word(w, pair, merged);
        for (const auto& [changed, delta] : deltas_) {
            if (delta == 0 || changed == pair) continue;
            int64_t& count = pair_counts_[changed];
            count += delta;
            if (count <= 0) {
                pair_counts_.erase(changed);
            } else {
                push(changed, count);
            }
        }
    }

    // Rewrites one word and records how its pair counts change. A pair changes only if it touches
    // a merged position: such old pairs disappear and such new pairs appear; the rest map 1:1.
    void merge_in_word(int32_t w, PairKey pair, int32_t merged) {
        Word& word = words_[w];
        const int32_t left = left_of(pair), right = right_of(pair);
        const std::vector<int32_t>& old = word.symbols;
        touched_.assign(old.size(), 0);
        new_symbols_.clear();
        new_merged_.clear();
        for (std::size_t i = 0; i < old.size();) {
            const bool hit = i + 1 < old.size() && old[i] == left && old[i + 1] == right;
            if (hit) touched_[i] = touched_[i + 1] = 1;
            new_symbols_.push_back(hit ? merged : old[i]);
            new_merged_.push_back(hit);
            i += hit ? 2 : 1;
        }
        if (new_symbols_.size() == old.size()) return;  // stale listing: the pair already left this word
        for (std::size_t i = 0; i + 1 < old.size(); ++i) {
            if (touched_[i] || touched_[i + 1]) deltas_[pair_key(old[i], old[i + 1])] -= word.count;
        }
        for (std::size_t i = 0; i + 1 < new_symbols_.size(); ++i) {
            if (!new_merged_[i] && !new_merged_[i + 1]) continue;
            const PairKey added = pair_key(new_symbols_[i], new_symbols_[i + 1]);
            deltas_[added] += word.count;
            pair_words_[added].push_back(w);
        }
        word.symbols.swap(new_symbols_);
    }

    const BpeTrainOptions& options_;
    std::vector<std::string> token_bytes_;  // id -> raw bytes
    std::unordered_map<std::string, int32_t> token_ids_;
    std::vector<Word> words_;
    std::unordered_map<PairKey, int64_t> pair_counts_;
    std::unordered_map<PairKey, std::vector<int32_t>> pair_words_;  // may list a word twice or stale
    std::vector<HeapEntry> heap_;
    std::vector<PairKey> merges_;
    std::unordered_map<PairKey, int64_t> deltas_;
    std::vector<char> touched_;  // scratch for merge_in_word
    std::vector<int32_t> new_symbols_;
    std::vector<char> new_merged_;
};

}  // namespace

BpeTokenizer bpe_train(const std::vector<std::string>& texts, const BpeTrainOptions& options) {
    const auto floor = static_cast<int64_t>(256 + options.specials.size());
    if (options.vocab_size < floor) {
        throw ConfigError("tokenizer vocab_size " + std::to_string(options.vocab_size) + " is too small: it must hold " +
                          "the 256 byte tokens and " + std::to_string(options.specials.size()) + " special tokens");
    }
    Trainer trainer(texts, options);
    trainer.run(options.vocab_size - static_cast<int32_t>(options.specials.size()));
    return trainer.result();
}

}  // namespace h2tune
