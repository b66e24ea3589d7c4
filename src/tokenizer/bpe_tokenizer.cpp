#include "h2tune/tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <limits>
#include <unordered_set>

#include "byte_level.h"
#include "h2tune/core/error.h"
#include "pre_tokenizer.h"
#include "unicode.h"

namespace h2tune {
namespace {

const char* const kPartsSource = "BpeTokenizer::from_parts";

[[noreturn]] void fail(const std::string& source, const std::string& message) {
    throw ModelError(error_at(source, 0, message));
}

uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

std::string quoted(const std::string& token) { return "'" + token + "'"; }

// One symbol of a word being merged; a doubly linked list over a vector keeps merges O(1).
struct Symbol {
    int32_t id;  // -1 once merged into its left neighbour
    int32_t prev, next;
};

// A merge that may apply between `left` and its right neighbour; stale once either changed.
struct Candidate {
    int32_t rank;
    int32_t left;
    int32_t left_id, right_id;
    int32_t merged_id;
};

// Min-heap order: lowest rank first, leftmost on ties (what Hugging Face and GPT-2 do).
bool later(const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
}

}  // namespace

// ---------------------------------------------------------------- construction

BpeTokenizer BpeTokenizer::from_parts(std::unordered_map<std::string, int32_t> vocab,
                                      std::vector<std::pair<std::string, std::string>> merges,
                                      std::vector<std::string> specials, PreTokenizer kind) {
    BpeTokenizer tokenizer;
    int64_t next_id = 0;  // 64-bit: a bad id of INT32_MAX must reach build's range check, not overflow
    for (const auto& [token, id] : vocab) next_id = std::max<int64_t>(next_id, int64_t{id} + 1);
    tokenizer.vocab_ = std::move(vocab);
    tokenizer.merges_ = std::move(merges);
    tokenizer.pre_tokenizer_ = kind;
    for (std::string& content : specials) {
        if (content.empty()) fail(kPartsSource, "empty special token");
        if (!tokenizer_detail::is_valid_utf8(content)) fail(kPartsSource, "special token is not valid UTF-8");
        AddedToken added;
        const auto in_vocab = tokenizer.vocab_.find(content);
        if (in_vocab != tokenizer.vocab_.end()) {
            added.id = in_vocab->second;
        } else {
            const int64_t id = next_id++;
            added.id = id > std::numeric_limits<int32_t>::max() ? -1 : static_cast<int32_t>(id);
        }
        added.content = std::move(content);
        tokenizer.added_tokens_.push_back(std::move(added));
    }
    tokenizer.build(kPartsSource);
    return tokenizer;
}

void BpeTokenizer::build(const std::string& source) {
    build_id_tables(source);
    build_byte_ids(source);
    build_merge_rules(source);
    detect_special_ids();
    cache_.clear();
}

// Distinct tokens: the vocabulary plus the added tokens that are not also vocabulary entries.
std::size_t BpeTokenizer::count_tokens(const std::string& source) const {
    std::size_t count = vocab_.size();
    std::unordered_set<std::string_view> seen;
    for (const AddedToken& added : added_tokens_) {
        if (!seen.insert(added.content).second) fail(source, "added token " + quoted(added.content) + " is listed twice");
        const auto in_vocab = vocab_.find(added.content);
        if (in_vocab == vocab_.end()) {
            ++count;
        } else if (in_vocab->second != added.id) {
            fail(source, "added token " + quoted(added.content) + " has id " + std::to_string(added.id) +
                             " but id " + std::to_string(in_vocab->second) + " in the vocabulary");
        }
    }
    return count;
}

void BpeTokenizer::build_id_tables(const std::string& source) {
    // Dense ids: N distinct tokens use exactly the ids 0..N-1, so the tables never grow beyond the
    // token count whatever ids a malformed file names.
    const std::size_t token_count = count_tokens(source);
    id_to_token_.assign(token_count, std::string());
    id_to_bytes_.assign(token_count, std::string());
    std::vector<char> used(token_count, 0);
    auto claim = [&](int32_t id, const std::string& token) {
        if (id < 0 || static_cast<std::size_t>(id) >= token_count) {
            fail(source, "id " + std::to_string(id) + " of token " + quoted(token) + " is out of range: there are " +
                             std::to_string(token_count) + " tokens, so ids must be 0.." +
                             std::to_string(static_cast<int64_t>(token_count) - 1));
        }
        if (used[id]) {
            fail(source, "duplicate id " + std::to_string(id) + " for tokens " + quoted(id_to_token_[id]) + " and " +
                             quoted(token));
        }
        used[id] = 1;
        id_to_token_[id] = token;
    };
    for (const auto& [token, id] : vocab_) {
        claim(id, token);
        // Hugging Face's ByteLevel decoder emits a token outside the byte alphabet verbatim.
        if (!tokenizer_detail::byte_level_to_bytes(token, id_to_bytes_[id])) id_to_bytes_[id] = token;
    }
    for (const AddedToken& added : added_tokens_) {
        if (vocab_.count(added.content) == 0) claim(added.id, added.content);
        id_to_bytes_[added.id] = added.content;  // added tokens decode to their content
    }
}

void BpeTokenizer::build_byte_ids(const std::string& source) {
    for (int b = 0; b < 256; ++b) {
        const auto it = vocab_.find(byte_to_unicode()[b]);
        if (it == vocab_.end()) {
            fail(source, "the vocabulary lacks the byte-level token " + quoted(byte_to_unicode()[b]) + " for byte " +
                             std::to_string(b) + " (every byte needs a token, as there is no byte fallback)");
        }
        byte_ids_[b] = it->second;
    }
}

void BpeTokenizer::build_merge_rules(const std::string& source) {
    merge_rules_.clear();
    merge_rules_.reserve(merges_.size());
    auto id_of = [&](const std::string& token, std::size_t rank, const char* role) {
        const auto it = vocab_.find(token);
        if (it == vocab_.end()) {
            fail(source, "merge " + std::to_string(rank) + " (" + quoted(merges_[rank].first) + " + " +
                             quoted(merges_[rank].second) + ") " + role + " token " + quoted(token) +
                             ", which is not in the vocabulary");
        }
        return it->second;
    };
    for (std::size_t rank = 0; rank < merges_.size(); ++rank) {
        const auto& [left, right] = merges_[rank];
        const int32_t left_id = id_of(left, rank, "uses");
        const int32_t right_id = id_of(right, rank, "uses");
        const int32_t merged_id = id_of(left + right, rank, "makes");
        // A repeated merge keeps its first (best) rank.
        merge_rules_.emplace(pair_key(left_id, right_id), MergeRule{static_cast<int32_t>(rank), merged_id});
    }
}

int32_t BpeTokenizer::added_token_id(std::string_view content) const {
    for (const AddedToken& added : added_tokens_) {
        if (added.content == content) return added.id;
    }
    return -1;
}

void BpeTokenizer::detect_special_ids() {
    auto first_present = [&](std::initializer_list<std::string_view> candidates, int32_t fallback) {
        for (std::string_view content : candidates) {
            const int32_t id = added_token_id(content);
            if (id >= 0) return id;
        }
        return fallback;
    };
    eos_id_ = first_present({"<|end_of_text|>", "<|endoftext|>", "</s>"}, -1);
    bos_id_ = first_present({"<|begin_of_text|>", "<s>"}, eos_id_);
    pad_id_ = first_present({"<|pad|>", "<pad>", "<|finetune_right_pad_id|>"}, eos_id_);
}

// ---------------------------------------------------------------- encode / decode

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
    if (id_to_token_.empty()) throw ModelError("BpeTokenizer::encode: the tokenizer is empty (nothing loaded)");
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 8);
    tokenizer_detail::for_each_piece(text, pre_tokenizer_, [&](std::string_view piece) { encode_piece(piece, ids); });
    return ids;
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
    if (piece.size() == 1) {
        out.push_back(byte_ids_[static_cast<unsigned char>(piece[0])]);
        return;
    }
    const bool cacheable = piece.size() <= BpeWordCache::kMaxWordBytes;
    if (cacheable && cache_.lookup(piece, out)) return;
    const std::size_t start = out.size();
    const auto whole = ignore_merges_ ? vocab_.find(tokenizer_detail::bytes_to_byte_level(piece)) : vocab_.end();
    if (whole != vocab_.end()) {
        out.push_back(whole->second);
    } else {
        merge_bytes(piece, out);
    }
    if (cacheable) cache_.insert(piece, out.data() + start, out.size() - start);
}

void BpeTokenizer::merge_bytes(std::string_view piece, std::vector<int32_t>& out) const {
    // Scratch space reused across calls; thread_local keeps concurrent encodes independent.
    thread_local std::vector<Symbol> symbols;
    thread_local std::vector<Candidate> heap;
    if (piece.size() > static_cast<std::size_t>(std::numeric_limits<int32_t>::max())) {
        throw ModelError("BpeTokenizer::encode: a single pre-token of " + std::to_string(piece.size()) +
                         " bytes is too long (at most 2^31-1)");
    }
    const auto count = static_cast<int32_t>(piece.size());
    symbols.resize(count);
    heap.clear();
    for (int32_t i = 0; i < count; ++i) {
        symbols[i] = Symbol{byte_ids_[static_cast<unsigned char>(piece[i])], i - 1, i + 1 < count ? i + 1 : -1};
    }
    auto offer = [&](int32_t left) {
        const int32_t right = symbols[left].next;
        if (right < 0) return;
        const auto rule = merge_rules_.find(pair_key(symbols[left].id, symbols[right].id));
        if (rule == merge_rules_.end()) return;
        heap.push_back(Candidate{rule->second.rank, left, symbols[left].id, symbols[right].id, rule->second.merged_id});
        std::push_heap(heap.begin(), heap.end(), later);
    };
    for (int32_t i = 0; i + 1 < count; ++i) offer(i);
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), later);
        const Candidate top = heap.back();
        heap.pop_back();
        Symbol& left = symbols[top.left];
        // A merged token is longer than its parts, so a symbol never regains an old id: matching
        // ids prove the pair is still there.
        if (left.id != top.left_id || left.next < 0 || symbols[left.next].id != top.right_id) continue;
        Symbol& right = symbols[left.next];
        left.id = top.merged_id;
        left.next = right.next;
        if (right.next >= 0) symbols[right.next].prev = top.left;
        right.id = -1;
        if (left.prev >= 0) offer(left.prev);
        offer(top.left);
    }
    for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
    std::string text;
    for (int32_t id : ids) {
        if (id < 0 || static_cast<std::size_t>(id) >= id_to_bytes_.size()) {
            throw ModelError("BpeTokenizer::decode: token id " + std::to_string(id) + " is out of range [0, " +
                             std::to_string(id_to_bytes_.size()) + ")");
        }
        text += id_to_bytes_[id];
    }
    return text;
}

// ---------------------------------------------------------------- lookups

int32_t BpeTokenizer::vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }

int32_t BpeTokenizer::token_id(const std::string& token) const {
    const auto it = vocab_.find(token);
    return it != vocab_.end() ? it->second : added_token_id(token);
}

const std::string& BpeTokenizer::token_string(int32_t id) const {
    if (id < 0 || static_cast<std::size_t>(id) >= id_to_token_.size()) {
        throw ModelError("BpeTokenizer::token_string: token id " + std::to_string(id) + " is out of range [0, " +
                         std::to_string(id_to_token_.size()) + ")");
    }
    return id_to_token_[id];
}

std::vector<std::string> BpeTokenizer::pre_tokenize(std::string_view text, PreTokenizer kind) {
    std::vector<std::string> pieces;
    tokenizer_detail::for_each_piece(text, kind, [&](std::string_view piece) { pieces.emplace_back(piece); });
    return pieces;
}

}  // namespace h2tune
