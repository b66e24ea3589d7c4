// BPE tokenizer that reads and writes the Hugging Face `tokenizer.json` format and encodes the way
// Hugging Face's Rust `tokenizers` library does: byte-level BPE files (GPT-2, Llama 3, Qwen2/3,
// SmolLM; also what `bpe_train` writes) and SentencePiece-style BPE files with byte fallback
// (Gemma, Mistral, Llama 2). docs/tokenizers.md lists what is supported and how it is checked.
//
// The pipeline of encode, as in Hugging Face:
//   1. added tokens whose "normalized" flag is false are found in the raw text (leftmost-longest,
//      with their single_word / lstrip / rstrip flags);
//   2. each stretch between them is normalized (normalizer: NFC, NFD, NFKC, NFKD, Lowercase,
//      Strip, Replace, Prepend, Sequence), and added tokens with normalized true are found in it;
//   3. the rest is cut into pieces (pre_tokenizer: Split with any behaviour and a literal or
//      regex pattern, ByteLevel, Digits, Metaspace, Whitespace, WhitespaceSplit, Punctuation,
//      BertPreTokenizer, CharDelimiterSplit, Sequence);
//   4. each piece goes through the BPE model (merges by rank, ignore_merges, byte_fallback with
//      <0xNN> tokens, unk_token / fuse_unk);
//   5. with add_special_tokens, the post_processor (TemplateProcessing, BertProcessing,
//      RobertaProcessing, ByteLevel, Sequence) adds its special tokens.
// decode maps ids to token strings and runs the decoder (ByteLevel, ByteFallback, Fuse, Strip,
// Replace, Metaspace, Sequence). Anything else in a file (another model type, an unknown component
// type, an unsupported option or regex construct) is a one-line ModelError naming the file and the
// key path, e.g. "tokenizer.json: pre_tokenizer.pretokenizers[0].type 'Foo' is not supported".
//
// Special ids (from the added tokens only):
//   eos  "<|end_of_text|>" (Llama 3), else "<|endoftext|>" (GPT-2, Qwen2, SmolLM), else "</s>".
//   bos  "<|begin_of_text|>" (Llama 3), else "<s>", else eos (GPT-2 uses <|endoftext|> for both).
//   pad  "<|pad|>", else "<pad>", else "<|finetune_right_pad_id|>" (Llama 3.1), else eos
//        (the common Hugging Face convention; padded positions must be masked by length, not id).
//   Each is -1 only when no candidate exists.
//
// Text is any byte string: invalid UTF-8 is not an error (each invalid byte is a character of its
// own that is neither letter, number nor space), and byte-level tokenizers still round-trip it.
// Thread safety: const members may be called concurrently; the word cache is mutex-guarded.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "h2tune/tokenizer/bpe_word_cache.h"

namespace h2tune {

struct EncodeOptions {
    // Add what the file's post_processor adds (e.g. Gemma's <bos>, Meta's Llama 3 <|begin_of_text|>).
    bool add_special_tokens = false;
    // Recognise special added tokens (special: true) written in the text. Off by default so that
    // user data cannot inject control tokens; Hugging Face's encode always recognises them.
    // Non-special added tokens (e.g. Qwen3's <think>) are always recognised, as in Hugging Face.
    bool match_special_tokens = false;

    // What Hugging Face's `Tokenizer.encode(text, add_special_tokens)` does.
    static EncodeOptions hugging_face(bool add_special_tokens) { return EncodeOptions{add_special_tokens, true}; }
};

class BpeTokenizer {
public:
    BpeTokenizer() = default;

    // Parses a tokenizer.json document; `source` names it in error messages. Throws ModelError.
    static BpeTokenizer from_json(const std::string& json_text, const std::string& source = "<memory>");
    // Reads a tokenizer.json file (a regular file of at most 256 MiB) with from_json.
    static BpeTokenizer from_file(const std::string& path);

    std::string to_json() const;            // a valid Hugging Face tokenizer.json document
    void save(const std::string& path) const;

    // Encodes raw bytes (any UTF-8, invalid sequences included) to ids with default options: no
    // special tokens added, special-token strings in `text` NOT interpreted.
    std::vector<int32_t> encode(std::string_view text) const { return encode(text, EncodeOptions{}); }
    std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const;
    // Hugging Face's decode(ids, skip_special_tokens=False): token strings through the decoder.
    // Byte-level files give decode(encode(s)) == s for every byte string s (Hugging Face would
    // replace invalid UTF-8 in the result by U+FFFD; here the bytes are kept).
    std::string decode(const std::vector<int32_t>& ids) const;

    // The pieces the BPE model receives for `text`, in order, after added-token matching,
    // normalization and pre-tokenization (raw bytes for byte-level files); an added token appears
    // as the text it matched. Hugging Face's pre_tokenize_str, for inspection and tests.
    std::vector<std::string> model_pieces(std::string_view text, const EncodeOptions& options = {}) const;

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
        bool single_word = false, lstrip = false, rstrip = false, normalized = false;
    };
    struct Pipeline;  // normalizer, pre-tokenizer, added-token matchers, decoder, post-processor
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
    void build_model_fallbacks(const std::string& source);
    void build_pipeline(const std::string& source);
    void build_merge_rules(const std::string& source);
    void detect_special_ids();
    int32_t added_token_id(std::string_view content) const;

    // Calls `emit(id, text)` for each added token found (id >= 0) and `emit(-1, piece)` for each
    // piece for the model, in order.
    void segment(std::string_view text, const EncodeOptions& options,
                 const std::function<void(int32_t, std::string_view)>& emit) const;
    // Appends the ids of one pre-token.
    void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
    // The model's first symbols for a piece that is not byte-level: one per character, byte
    // fallback or unk for characters outside the vocabulary.
    void initial_symbols(std::string_view piece, std::vector<int32_t>& symbols) const;
    void merge_symbols(const std::vector<int32_t>& initial, std::vector<int32_t>& out) const;

    std::unordered_map<std::string, int32_t> vocab_;  // model vocabulary: byte-level string -> id
    std::vector<std::pair<std::string, std::string>> merges_;  // by rank
    std::vector<AddedToken> added_tokens_;
    bool ignore_merges_ = false;  // model.ignore_merges: whole pre-tokens found in vocab skip BPE
    bool byte_fallback_ = false;  // model.byte_fallback: unknown characters become <0xNN> tokens
    bool fuse_unk_ = false;       // model.fuse_unk: consecutive unknown characters share one unk
    std::string unk_token_;       // model.unk_token; empty for none
    // The components as JSON text ("null" when absent), parsed by build() and written back by
    // to_json().
    std::string normalizer_json_ = "null", pre_tokenizer_json_ = "null", post_processor_json_ = "null",
                decoder_json_ = "null";

    // Derived by build().
    std::shared_ptr<const Pipeline> pipeline_;
    bool byte_level_ = false;               // the pre-tokenizer ends with ByteLevel
    std::vector<std::string> id_to_token_;  // vocab string or added-token content
    std::array<int32_t, 256> byte_ids_{};   // byte-level: id of each byte's symbol
    std::array<int32_t, 256> byte_fallback_ids_{};  // <0xNN> token ids, -1 where absent
    int32_t unk_id_ = -1;
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
