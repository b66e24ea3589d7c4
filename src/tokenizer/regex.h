// A small backtracking regex engine for the patterns Hugging Face tokenizer.json files use
// (Oniguruma semantics: leftmost match, alternatives tried in order, greedy quantifiers that give
// back). std::regex lacks \p{..} and is far too slow; this needs no ICU.
//
// Supported: literals and escapes (\t \n \r \f \v \e \a \0 \xHH \x{H..} \uHHHH, escaped
// punctuation), . (any character but \n), classes [...] and [^...] with ranges, \s \S \d \D \w \W
// \h \H, \p{..} \P{..} \p{^..} for general categories (L, Lu, Ll, Lt, Lm, Lo, LC, M, Mn, Mc, Me,
// N, Nd, Nl, No, P*, S*, Z*, C*, their long names, Any); groups (...), (?:...), (?<name>...);
// flags (?i) (?-i) (?i:...) (?-i:...); lookahead (?=...) (?!...); anchors ^ $ \A \z \Z \b \B;
// quantifiers ? * + {m} {m,} {,n} {m,n}, lazy (…?) and, on single characters, possessive (…+).
// Anything else (backreferences, lookbehind, atomic groups, scripts, nested class operations) is a
// RegexError naming the construct. Case-insensitive matching uses simple case folding.
// Invalid UTF-8 bytes in the subject are characters of their own that only negated classes and .
// match. Private to the tokenizer component.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace h2tune::tokenizer_detail {

class RegexError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class Regex {
public:
    explicit Regex(std::string_view pattern);  // throws RegexError
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;
    ~Regex();

    // Byte ranges of the successive matches, the way the Rust `onig` crate's find_iter reports
    // them: non-overlapping, left to right, an empty match right after the previous match skipped.
    std::vector<std::pair<std::size_t, std::size_t>> find_all(std::string_view text) const;

    struct Program;

private:
    std::unique_ptr<Program> program_;
};

}  // namespace h2tune::tokenizer_detail
