// The parsed components of a tokenizer.json around the BPE model, shared (immutable) by copies of
// a BpeTokenizer. Private to the tokenizer component.
#pragma once

#include <optional>

#include "added_vocabulary.h"
#include "decoder.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"
#include "normalizer.h"
#include "post_processor.h"
#include "pre_tokenization.h"

namespace h2tune {

struct BpeTokenizer::Pipeline {
    std::optional<tokenizer_detail::Normalizer> normalizer;
    tokenizer_detail::PreTokenization pre_tokenization;
    tokenizer_detail::AddedTokenMatcher raw_tokens;         // added tokens with normalized false
    tokenizer_detail::AddedTokenMatcher normalized_tokens;  // normalized true, matched normalized
    tokenizer_detail::Decoder decoder;
    tokenizer_detail::PostProcessor post_processor;
};

}  // namespace h2tune
