// Per-token log-probabilities of one token sequence under a causal LM, for perplexity.
//
// A sequence longer than the model's context is scored in overlapping windows (a sliding window
// with a stride, as the Hugging Face perplexity guide does): window w covers ids[begin, end),
// starts a fresh forward pass at position 0, and scores only the tokens ids[score_from, end) that
// no earlier window scored, so every token is scored exactly once and, after the first window,
// with at least context - stride tokens before it. Token 0 is never scored (nothing precedes it);
// callers put a BOS id there when the model expects one.
#pragma once

#include <cstdint>
#include <vector>

#include "h2tune/model/llama.h"

namespace h2tune {

struct ScoringWindow {
    int64_t begin = 0;       // first input position of the window
    int64_t end = 0;         // one past the last input position
    int64_t score_from = 0;  // first position whose token this window scores (> begin)
};

// The windows covering a sequence of `length` tokens (length >= 2) with windows of at most
// `context` tokens (>= 2) advancing by `stride` tokens (1 <= stride < context; stride = context - 1
// gives chunks that overlap by one token). The first window starts at 0 and scores from 1; window
// w + 1 ends `stride` tokens after window w. Throws ConfigError for bad sizes.
std::vector<ScoringWindow> scoring_windows(int64_t length, int64_t context, int64_t stride);

struct TokenLogProbs {
    std::vector<ScoringWindow> windows;
    // logprob[i - 1] = log p(ids[i] | the window's tokens before i), for i = 1 .. length - 1.
    std::vector<double> logprob;
    double total = 0;        // sum of logprob
    double mean_nll = 0;     // -total / logprob.size()
    double perplexity = 0;   // exp(mean_nll)
};

// Scores `ids` (every id in [0, vocab_size)) with `model` (in eval mode, no gradients) window by
// window; log-softmax in float32 on the model's device, as transformers computes it.
TokenLogProbs score_token_sequence(LlamaForCausalLM& model, const std::vector<int32_t>& ids, int64_t context,
                                   int64_t stride);

}  // namespace h2tune
