// Hand-written equivalents of the pre-tokenizer regexes (std::regex is far too slow and lacks
// \p{..}). Each `*_piece_end` reproduces the leftmost-alternative, greedy-with-backtracking match
// that Oniguruma / fancy-regex find for the pattern at `pos`. Private to the tokenizer component.
#pragma once

#include <cstddef>
#include <string_view>

#include "h2tune/tokenizer/bpe_tokenizer.h"
#include "unicode.h"

namespace h2tune::tokenizer_detail {

// Splits a text into pre-tokens ("words"), left to right, without copying.
class PieceIterator {
public:
    PieceIterator(std::string_view text, BpeTokenizer::PreTokenizer kind) : text_(text), kind_(kind) {}

    // Stores the next piece in `piece`; false once the text is exhausted.
    bool next(std::string_view& piece);

private:
    struct Char {
        uint32_t code_point;
        uint8_t length;
        CharClass cls;
    };
    Char char_at(std::size_t pos) const;
    std::size_t run_end(std::size_t pos, std::size_t limit, CharClass cls, std::size_t max_chars = SIZE_MAX) const;
    std::size_t newline_run_end(std::size_t pos, std::size_t limit) const;
    std::size_t contraction_end(std::size_t pos, std::size_t limit, bool ignore_case) const;
    std::size_t whitespace_piece_end(std::size_t pos, std::size_t limit, bool split_after_newline) const;

    // `limit` is where the text ends for the regex (the digit-isolating variant runs the regex on
    // the stretches between digits).
    std::size_t gpt2_piece_end(std::size_t pos, std::size_t limit) const;
    std::size_t llama3_piece_end(std::size_t pos, std::size_t max_digits) const;
    std::size_t next_digit(std::size_t pos) const;

    std::string_view text_;
    BpeTokenizer::PreTokenizer kind_;
    std::size_t pos_ = 0;
    std::size_t stretch_end_ = 0;  // Gpt2IsolatedDigits: end of the current digit-free stretch
};

template <class Fn>
void for_each_piece(std::string_view text, BpeTokenizer::PreTokenizer kind, Fn&& fn) {
    PieceIterator pieces(text, kind);
    std::string_view piece;
    while (pieces.next(piece)) fn(piece);
}

}  // namespace h2tune::tokenizer_detail
