// Byte-level BPE tokenizer that reads and writes the Hugging Face `tokenizer.json` format
// (GPT-2 style: byte-to-unicode map, regex pre-tokenization, ranked merges, special tokens).
// Real checkpoints' tokenizers (GPT-2, Llama 3, Qwen2, SmolLM) load through the same reader.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

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

    int32_t vocab_size() const;             // max id + 1, special tokens included
    // Id of a token string (special or ordinary); -1 when absent.
    int32_t token_id(const std::string& token) const;
    const std::string& token_string(int32_t id) const;  // throws ModelError if out of range

    // Conventional specials; -1 when the tokenizer has none.
    int32_t bos_id() const { return bos_id_; }
    int32_t eos_id() const { return eos_id_; }
    int32_t pad_id() const { return pad_id_; }

    // Building blocks used by the trainer and tests.
    enum class PreTokenizer { Gpt2, Llama3 };
    static std::vector<std::string> pre_tokenize(std::string_view text, PreTokenizer kind);
    static const std::vector<std::string>& byte_to_unicode();  // 256 entries, UTF-8 encoded

    // Construction from parts (the trainer's output). `vocab` maps byte-level token strings to ids;
    // `merges` are ordered by rank; `specials` are added after the vocabulary.
    static BpeTokenizer from_parts(std::unordered_map<std::string, int32_t> vocab,
                                   std::vector<std::pair<std::string, std::string>> merges,
                                   std::vector<std::string> specials, PreTokenizer kind = PreTokenizer::Gpt2);

private:
    // (implementation-defined members)
    std::unordered_map<std::string, int32_t> vocab_;
    std::vector<std::string> id_to_token_;
    std::map<std::pair<std::string, std::string>, int32_t> merge_rank_;
    std::vector<std::pair<std::string, std::string>> merges_;
    std::vector<std::pair<std::string, int32_t>> specials_;
    PreTokenizer pre_tokenizer_ = PreTokenizer::Gpt2;
    int32_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1;
};

// Learns a byte-level BPE vocabulary of `vocab_size` tokens (256 byte tokens + merges + specials)
// from `texts`. Deterministic: ties between equally frequent pairs break by the pair's strings.
struct BpeTrainOptions {
    int32_t vocab_size = 4096;
    int64_t min_frequency = 2;
    std::vector<std::string> specials = {"<|endoftext|>", "<|pad|>"};
};
BpeTokenizer bpe_train(const std::vector<std::string>& texts, const BpeTrainOptions& options);

}  // namespace h2tune
