// tokenizer.json "normalizer": NFC, NFD, NFKC, NFKD, Lowercase, Strip, Replace, Prepend and a
// Sequence of them, applied to each stretch of text between added tokens. Private to the
// tokenizer component.
#pragma once

#include <string>
#include <vector>

#include "json_context.h"
#include "split_pattern.h"

namespace h2tune::tokenizer_detail {

class Normalizer {
public:
    // `path` is the key path of `spec` in the document (for error messages).
    static Normalizer from_json(const json& spec, const std::string& path, const JsonContext& context);

    std::string apply(std::string text) const;

private:
    enum class Kind { Nfc, Nfd, Nfkc, Nfkd, Lowercase, Strip, Replace, Prepend, Sequence };
    Kind kind_ = Kind::Sequence;
    bool strip_left_ = false, strip_right_ = false;
    std::shared_ptr<const SplitPattern> pattern_;  // Replace
    std::string content_;                          // Replace, Prepend
    std::vector<Normalizer> steps_;                // Sequence
};

}  // namespace h2tune::tokenizer_detail
