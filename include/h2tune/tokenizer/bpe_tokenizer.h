// Byte-level BPE tokenizer that reads and writes the Hugging Face `tokenizer.json` format
// (GPT-2 style: byte-to-unicode map, regex pre-tokenization, ranked merges, special tokens).
// Real checkpoints' tokenizers (GPT-2, Llama 3, Qwen2, SmolLM) load through the same reader.
//
// Supported tokenizer.json subset (anything else is a ModelError naming the file and the field):
//   model          BPE; merges as "a b" strings or [["a","b"]] arrays; ignore_merges honoured;
//                  no dropout, no byte_fallback, no continuing_subword_prefix / end_of_word_suffix.
//                  The vocabulary must hold all 256 byte symbols. Ids of the vocabulary and the
//                  added tokens together must be dense: each of 0..N-1 used exactly once (an added
//                  token may repeat its own vocabulary entry, as GPT-2's <|endoftext|> does).
//   pre_tokenizer  ByteLevel(add_prefix_space false, use_regex true)                 -> Gpt2
//                  Sequence[Split(Regex Llama 3 pattern, Isolated), ByteLevel(no regex)] -> Llama3
//                  Sequence[Split(Regex Qwen2 pattern, Isolated), ByteLevel(no regex)]   -> Qwen2
//                  Sequence[Digits(individual_digits), ByteLevel(use_regex true)]     -> Gpt2IsolatedDigits
//                  (SmolLM, StarCoder). A Split with any other regex is rejected.
//   normalizer     null; NFC is accepted and treated as identity (input is assumed to be NFC
//                  already, true of nearly all text; other input still round-trips exactly).
//   decoder        null or ByteLevel. post_processor, truncation, padding: ignored (encode never
//                  adds special tokens; callers insert bos/eos ids themselves).
//
// Character classes: \p{L} and \p{N} come from generated Unicode 14 general-category tables,
// \s is the Unicode White_Space property. Invalid UTF-8 is not an error: each invalid byte is a
// character of its own in the "other" class (neither letter, number nor space).
//
// Special ids (from the added tokens only):
//   eos  "<|end_of_text|>" (Llama 3), else "<|endoftext|>" (GPT-2, Qwen2, SmolLM), else "</s>".
//   bos  "<|begin_of_text|>" (Llama 3), else "<s>", else eos (GPT-2 uses <|endoftext|> for both).
//   pad  "<|pad|>", else "<pad>", else "<|finetune_right_pad_id|>" (Llama 3.1), else eos
//        (the common Hugging Face convention; padded positions must be masked by length, not id).
//   Each is -1 only when no candidate exists.
//
// Thread safety: const members may be called concurrently; the word cache is mutex-guarded.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "h2tune/tokenizer/bpe_word_cache.h"

namespace h2tune {

class BpeTokenizer {
public:
    BpeTokenizer() = default;

    // Parses a tokenizer.json document; `source` names it in error messages. Throws ModelError.
    static BpeTokenizer from_json(const std::string& json_text, const std::string& source = "<memory>");
    static BpeTokenizer from_file(const std::string& path);

    std::string to_json() const;            // a valid Hugging Face tokenizer.json document
    void save(const std::string& path) const;

    // Encodes raw bytes (any UTF-8, invalid sequences included) to ids; special-token strings in
    // `text` are NOT interpreted (user data cannot inject control tokens).
    std::vector<int32_t> encode(std::string_view text) const;
    // Inverse of encode: decode(encode(s)) == s for every byte string s. Special tokens decode to
    // their content.
    std::string decode(const std::vector<int32_t>& ids) const;

    int32_t vocab_size() const;             // max id + 1, special tokens included (0 when empty)
    // Id of a token string (special or ordinary); -1 when absent.
    int32_t token_id(const std::string& token) const;
    const std::string& token_string(int32_t id) const;  // throws ModelError if out of range

    // Conventional specials; -1 when the tokenizer has none.
    int32_t bos_id() const { return bos_id_; }
    int32_t eos_id() const { return eos_id_; }
    int32_t pad_id() const { return pad_id_; }

    // Building blocks used by the trainer and tests.
    // Gpt2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    // Llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
    //         \s*[\r\n]+|\s+(?!\S)|\s+
    // Qwen2: Llama3 with \p{N} (single digits). Gpt2IsolatedDigits: every \p{N} character alone,
    //        the Gpt2 pattern on the text between digits (SmolLM, StarCoder).
    enum class PreTokenizer { Gpt2, Llama3, Qwen2, Gpt2IsolatedDigits };
    static std::vector<std::string> pre_tokenize(std::string_view text, PreTokenizer kind);
    static const std::vector<std::string>& byte_to_unicode();  // 256 entries, UTF-8 encoded

    // Construction from parts (the trainer's output). `vocab` maps byte-level token strings to ids;
    // `merges` are ordered by rank; `specials` are added after the vocabulary.
    static BpeTokenizer from_parts(std::unordered_map<std::string, int32_t> vocab,
                                   std::vector<std::pair<std::string, std::string>> merges,
                                   std::vector<std::string> specials, PreTokenizer kind = PreTokenizer::Gpt2);

private:
    struct AddedToken {
        int32_t id = -1;
        std::string content;
        bool special = true;
        // Kept only to write the file back unchanged; encode never matches added tokens in text.
        bool single_word = false, lstrip = false, rstrip = false, normalized = false;
    };
    struct MergeRule {
        int32_t rank;
        int32_t merged_id;
    };
    struct JsonReader;  // tokenizer.json parsing helpers (tokenizer_json.cpp)

    // Validates the parts and derives the lookup tables; `source` names the input in errors.
    void build(const std::string& source);
    std::size_t count_tokens(const std::string& source) const;
    void build_id_tables(const std::string& source);
    void build_byte_ids(const std::string& source);
    void build_merge_rules(const std::string& source);
    void detect_special_ids();
    int32_t added_token_id(std::string_view content) const;

    // Appends the ids of one pre-token.
    void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
    void merge_bytes(std::string_view piece, std::vector<int32_t>& out) const;

    std::unordered_map<std::string, int32_t> vocab_;  // model vocabulary: byte-level string -> id
    std::vector<std::pair<std::string, std::string>> merges_;  // by rank
    std::vector<AddedToken> added_tokens_;
    PreTokenizer pre_tokenizer_ = PreTokenizer::Gpt2;
    bool ignore_merges_ = false;   // model.ignore_merges: whole pre-tokens found in vocab skip BPE
    bool nfc_normalizer_ = false;  // written back as read

    // Derived by build().
    std::vector<std::string> id_to_token_;  // vocab string or added-token content
    std::vector<std::string> id_to_bytes_;  // what decode emits per id
    std::array<int32_t, 256> byte_ids_{};
    std::unordered_map<uint64_t, MergeRule> merge_rules_;  // key: left id << 32 | right id
    int32_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1;
    mutable BpeWordCache cache_;
};

// Learns a byte-level BPE vocabulary of `vocab_size` tokens (256 byte tokens + merges + specials)
// from `texts`; fewer when no pair reaches min_frequency any more. Pairs are counted within
// pre-tokens of the chosen pattern. Deterministic: ties between equally frequent pairs go to the
// pair whose raw bytes (left, then right) compare smallest. Ids: bytes 0..255 in byte order, then
// merged tokens in merge order, then specials. Throws ConfigError for a vocab_size that cannot hold
// the 256 byte tokens plus the specials.
struct BpeTrainOptions {
    int32_t vocab_size = 4096;
    int64_t min_frequency = 2;  // a pair seen fewer times is never merged
    std::vector<std::string> specials = {"<|endoftext|>", "<|pad|>"};
    BpeTokenizer::PreTokenizer pre_tokenizer = BpeTokenizer::PreTokenizer::Gpt2;
    // Called now and then with (merges learned, merges wanted); may be empty.
    std::function<void(int32_t, int32_t)> progress;
};
BpeTokenizer bpe_train(const std::vector<std::string>& texts, const BpeTrainOptions& options);

}  // namespace h2tune
