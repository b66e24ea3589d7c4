// Matching a tokenizer's added tokens in text the way Hugging Face's AddedVocabulary does: tokens
// with normalized false are found in the raw text first, those with normalized true in the
// normalized text of what lies between; leftmost-longest matches; single_word, lstrip and rstrip
// honoured. Private to the tokenizer component.
#pragma once

#include <bitset>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace h2tune::tokenizer_detail {

struct AddedTokenRule {
    int32_t id;
    bool special, single_word, lstrip, rstrip;
};

// A stretch of text: an added token (id >= 0) or text to tokenize (id -1), as byte offsets.
struct Segment {
    std::size_t start, end;
    int32_t id;
};

class AddedTokenMatcher {
public:
    void add(std::string_view pattern, const AddedTokenRule& rule);
    bool empty() const { return rules_.empty(); }

    // Cuts `text` into segments covering it (a token's rstrip white space may also hold later
    // tokens, which then overlap it, as in Hugging Face). With match_special false, special tokens are not
    // recognised (Hugging Face's encode_special_tokens); their text stays ordinary text.
    std::vector<Segment> split(std::string_view text, bool match_special) const;

private:
    // Longest pattern starting at `pos`: its index into rules_ and its end; -1 when none.
    int32_t longest_at(std::string_view text, std::size_t pos, std::size_t& end) const;

    struct Node {
        int32_t rule = -1;
    };
    std::vector<Node> nodes_{1};
    std::unordered_map<uint64_t, int32_t> edges_;  // node << 8 | byte -> child node
    std::bitset<256> first_bytes_;
    std::vector<AddedTokenRule> rules_;
};

}  // namespace h2tune::tokenizer_detail
