#include "h2tune/tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <limits>
#include <unordered_set>

#include "byte_level.h"
#include "h2tune/core/error.h"
#include "json_context.h"
#include "pre_tokenization.h"
#include "pre_tokenizer.h"
#include "tokenizer_pipeline.h"
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

std::string in_quotes(const std::string& token) { return "'" + token + "'"; }

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
    tokenizer.pre_tokenizer_json_ = tokenizer_detail::pre_tokenizer_json(kind);
    tokenizer.decoder_json_ = R"({"add_prefix_space":true,"trim_offsets":true,"type":"ByteLevel","use_regex":true})";
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
    build_pipeline(source);
    if (byte_level_) build_byte_ids(source);
    build_model_fallbacks(source);
    build_merge_rules(source);
    detect_special_ids();
    cache_.clear();
}

void BpeTokenizer::build_pipeline(const std::string& source) {
    using tokenizer_detail::json;
    const tokenizer_detail::JsonContext context{source};
    auto parse = [&](const std::string& text) {
        try {
            return json::parse(text);
        } catch (const json::exception& e) {
            context.fail(std::string("invalid component JSON: ") + e.what());
        }
    };
    auto pipeline = std::make_shared<Pipeline>();
    const json normalizer = parse(normalizer_json_);
    if (!normalizer.is_null()) {
        pipeline->normalizer = tokenizer_detail::Normalizer::from_json(normalizer, "normalizer", context);
    }
    const json pre_tokenizer = parse(pre_tokenizer_json_);
    if (!pre_tokenizer.is_null()) {
        pipeline->pre_tokenization = tokenizer_detail::PreTokenization::from_json(pre_tokenizer, "pre_tokenizer", context);
    }
    const json decoder = parse(decoder_json_);
    pipeline->decoder = decoder.is_null() ? tokenizer_detail::Decoder::none()
                                          : tokenizer_detail::Decoder::from_json(decoder, "decoder", context);
    const json post_processor = parse(post_processor_json_);
    if (!post_processor.is_null()) {
        pipeline->post_processor = tokenizer_detail::PostProcessor::from_json(post_processor, "post_processor", context);
        pipeline->post_processor.check_ids(static_cast<int32_t>(id_to_token_.size()), "post_processor", context);
    }
    for (const AddedToken& added : added_tokens_) {
        const tokenizer_detail::AddedTokenRule rule{added.id, added.special, added.single_word, added.lstrip,
                                                    added.rstrip};
        if (added.normalized) {
            // Hugging Face matches these on normalized text, so it normalizes their content too.
            const std::string pattern = pipeline->normalizer ? pipeline->normalizer->apply(added.content) : added.content;
            pipeline->normalized_tokens.add(pattern, rule);
        } else {
            pipeline->raw_tokens.add(added.content, rule);
        }
    }
    byte_level_ = pipeline->pre_tokenization.byte_level();
    pipeline_ = std::move(pipeline);
}

void BpeTokenizer::build_model_fallbacks(const std::string& source) {
    byte_fallback_ids_.fill(-1);
    if (byte_fallback_) {
        static const char kHex[] = "0123456789ABCDEF";
        for (int b = 0; b < 256; ++b) {
            const std::string token = std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">";
            const auto it = vocab_.find(token);
            if (it != vocab_.end()) byte_fallback_ids_[b] = it->second;
        }
    }
    unk_id_ = -1;
    if (!unk_token_.empty()) {
        const auto it = vocab_.find(unk_token_);
        if (it == vocab_.end()) fail(source, "model.unk_token " + in_quotes(unk_token_) + " is not in model.vocab");
        unk_id_ = it->second;
    }
}

// Distinct tokens: the vocabulary plus the added tokens that are not also vocabulary entries.
std::size_t BpeTokenizer::count_tokens(const std::string& source) const {
    std::size_t count = vocab_.size();
    std::unordered_set<std::string_view> seen;
    for (const AddedToken& added : added_tokens_) {
        if (!seen.insert(added.content).second) fail(source, "added token " + in_quotes(added.content) + " is listed twice");
        const auto in_vocab = vocab_.find(added.content);
        if (in_vocab == vocab_.end()) {
            ++count;
        } else if (in_vocab->second != added.id) {
            fail(source, "added token " + in_quotes(added.content) + " has id " + std::to_string(added.id) +
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
    std::vector<char> used(token_count, 0);
    auto claim = [&](int32_t id, const std::string& token) {
        if (id < 0 || static_cast<std::size_t>(id) >= token_count) {
            fail(source, "id " + std::to_string(id) + " of token " + in_quotes(token) + " is out of range: there are " +
                             std::to_string(token_count) + " tokens, so ids must be 0.." +
                             std::to_string(static_cast<int64_t>(token_count) - 1));
        }
        if (used[id]) {
            fail(source, "duplicate id " + std::to_string(id) + " for tokens " + in_quotes(id_to_token_[id]) + " and " +
                             in_quotes(token));
        }
        used[id] = 1;
        id_to_token_[id] = token;
    };
    for (const auto& [token, id] : vocab_) claim(id, token);
    for (const AddedToken& added : added_tokens_) {
        if (vocab_.count(added.content) == 0) claim(added.id, added.content);
    }
}

void BpeTokenizer::build_byte_ids(const std::string& source) {
    for (int b = 0; b < 256; ++b) {
        const auto it = vocab_.find(byte_to_unicode()[b]);
        if (it == vocab_.end()) {
            fail(source, "the vocabulary lacks the byte-level token " + in_quotes(byte_to_unicode()[b]) + " for byte " +
                             std::to_string(b) + " (a ByteLevel pre-tokenizer needs a token for every byte)");
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
            fail(source, "merge " + std::to_string(rank) + " (" + in_quotes(merges_[rank].first) + " + " +
                             in_quotes(merges_[rank].second) + ") " + role + " token " + in_quotes(token) +
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

void BpeTokenizer::segment(std::string_view text, const EncodeOptions& options,
                           const std::function<void(int32_t, std::string_view)>& emit) const {
    if (id_to_token_.empty() || !pipeline_) {
        throw ModelError("BpeTokenizer::encode: the tokenizer is empty (nothing loaded)");
    }
    const Pipeline& pipeline = *pipeline_;
    std::vector<tokenizer_detail::Piece> pieces;
    const std::function<void(std::string_view)> emit_piece = [&](std::string_view piece) { emit(-1, piece); };
    auto encode_stretch = [&](std::string_view stretch, bool at_input_start) {
        // Without a normalizer the stretch is used in place (the common byte-level case).
        std::string normalized_storage;
        if (pipeline.normalizer) normalized_storage = pipeline.normalizer->apply(std::string(stretch));
        const std::string_view normalized = pipeline.normalizer ? std::string_view(normalized_storage) : stretch;
        for (const tokenizer_detail::Segment& part :
             pipeline.normalized_tokens.split(normalized, options.match_special_tokens)) {
            const std::string_view part_text = normalized.substr(part.start, part.end - part.start);
            if (part.id >= 0) {
                emit(part.id, part_text);
                continue;
            }
            pieces.clear();
            pieces.push_back(tokenizer_detail::Piece{std::string(part_text), at_input_start && part.start == 0});
            pipeline.pre_tokenization.emit_pieces(pieces, emit_piece);
        }
    };
    for (const tokenizer_detail::Segment& part : pipeline.raw_tokens.split(text, options.match_special_tokens)) {
        const std::string_view part_text = text.substr(part.start, part.end - part.start);
        if (part.id >= 0) {
            emit(part.id, part_text);
        } else {
            encode_stretch(part_text, part.start == 0);
        }
    }
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, const EncodeOptions& options) const {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 8);
    segment(text, options, [&](int32_t id, std::string_view piece) {
        if (id >= 0) {
            ids.push_back(id);
        } else {
            encode_piece(piece, ids);
        }
    });
    if (options.add_special_tokens) ids = pipeline_->post_processor.apply(std::move(ids));
    return ids;
}

std::vector<std::string> BpeTokenizer::model_pieces(std::string_view text, const EncodeOptions& options) const {
    std::vector<std::string> pieces;
    segment(text, options, [&](int32_t, std::string_view piece) { pieces.emplace_back(piece); });
    return pieces;
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
    if (byte_level_ && piece.size() == 1) {
        out.push_back(byte_ids_[static_cast<unsigned char>(piece[0])]);
        return;
    }
    const bool cacheable = piece.size() <= BpeWordCache::kMaxWordBytes;
    if (cacheable && cache_.lookup(piece, out)) return;
    const std::size_t start = out.size();
    auto whole = vocab_.end();
    if (ignore_merges_) {
        whole = vocab_.find(byte_level_ ? tokenizer_detail::bytes_to_byte_level(piece) : std::string(piece));
    }
    if (whole != vocab_.end()) {
        out.push_back(whole->second);
    } else {
        thread_local std::vector<int32_t> initial;
        initial.clear();
        if (byte_level_) {
            for (char c : piece) initial.push_back(byte_ids_[static_cast<unsigned char>(c)]);
        } else {
            initial_symbols(piece, initial);
        }
        merge_symbols(initial, out);
    }
    if (cacheable) cache_.insert(piece, out.data() + start, out.size() - start);
}

// Hugging Face's BPE::merge_word: a character in the vocabulary is a symbol; otherwise its bytes'
// <0xNN> tokens (byte_fallback, all of them present) or unk, consecutive unks fused if fuse_unk.
// Without either the character is dropped, as Hugging Face drops it.
void BpeTokenizer::initial_symbols(std::string_view piece, std::vector<int32_t>& symbols) const {
    bool pending_unk = false;
    std::string character;
    for (std::size_t pos = 0; pos < piece.size();) {
        const tokenizer_detail::Utf8Char c = tokenizer_detail::decode_utf8(piece, pos);
        character.assign(piece.substr(pos, c.length));
        pos += c.length;
        const auto it = vocab_.find(character);
        if (it != vocab_.end()) {
            if (pending_unk) symbols.push_back(unk_id_);
            pending_unk = false;
            symbols.push_back(it->second);
            continue;
        }
        if (byte_fallback_) {
            const bool all_bytes = std::all_of(character.begin(), character.end(), [&](char b) {
                return byte_fallback_ids_[static_cast<unsigned char>(b)] >= 0;
            });
            if (all_bytes) {
                for (char b : character) symbols.push_back(byte_fallback_ids_[static_cast<unsigned char>(b)]);
                continue;
            }
        }
        if (unk_id_ >= 0) {
            if (pending_unk && !fuse_unk_) symbols.push_back(unk_id_);
            pending_unk = true;
        }
    }
    if (pending_unk) symbols.push_back(unk_id_);
}

void BpeTokenizer::merge_symbols(const std::vector<int32_t>& initial, std::vector<int32_t>& out) const {
    // Scratch space reused across calls; thread_local keeps concurrent encodes independent.
    thread_local std::vector<Symbol> symbols;
    thread_local std::vector<Candidate> heap;
    if (initial.size() > static_cast<std::size_t>(std::numeric_limits<int32_t>::max())) {
        throw ModelError("BpeTokenizer::encode: a single pre-token of " + std::to_string(initial.size()) +
                         " symbols is too long (at most 2^31-1)");
    }
    const auto count = static_cast<int32_t>(initial.size());
    if (count == 0) return;
    symbols.resize(count);
    heap.clear();
    for (int32_t i = 0; i < count; ++i) symbols[i] = Symbol{initial[i], i - 1, i + 1 < count ? i + 1 : -1};
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
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
        if (id < 0 || static_cast<std::size_t>(id) >= id_to_token_.size()) {
            throw ModelError("BpeTokenizer::decode: token id " + std::to_string(id) + " is out of range [0, " +
                             std::to_string(id_to_token_.size()) + ")");
        }
        tokens.push_back(id_to_token_[id]);
    }
    if (!pipeline_) return std::string();  // only reachable with no ids
    return pipeline_->decoder.decode(std::move(tokens));
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
