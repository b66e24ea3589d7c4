// Unicode normalization forms (UAX #15) and per-character lowercasing, from the generated tables.
// Invalid UTF-8 bytes pass through unchanged (as starters that never combine). Private to the
// tokenizer component.
#pragma once

#include <string>
#include <string_view>

namespace h2tune::tokenizer_detail {

enum class NormalForm { NFC, NFD, NFKC, NFKD };

std::string normalize_unicode(std::string_view text, NormalForm form);

// Each character replaced by its lowercase mapping, without context (what Hugging Face's
// Lowercase normalizer does: final sigma stays σ).
std::string lowercase(std::string_view text);

}  // namespace h2tune::tokenizer_detail
