// Evaluation of a (possibly adapted) causal LM on a classification task, two ways:
//  * label scoring: the label whose tokens (plus EOS) are most likely after the prompt; the
//    prompt is run once and its keys and values are reused for every candidate label;
//  * greedy generation + exact match of the generated text with the reference output.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "h2tune/data/loader.h"
#include "h2tune/model/llama.h"

namespace h2tune {

// Candidate labels tokenised as responses (label tokens followed by EOS).
struct LabelSet {
    std::vector<std::string> labels;
    std::vector<std::vector<int32_t>> ids;
};
LabelSet make_label_set(const std::vector<std::string>& labels, const BpeTokenizer& tokenizer);

// Sum of log p(candidate tokens | prompt) per candidate, using one prompt pass and a KV cache.
std::vector<double> score_candidates(LlamaForCausalLM& model, const std::vector<int32_t>& prompt,
                                     const std::vector<std::vector<int32_t>>& candidates);
// The same computed naively (one full forward per candidate); for tests.
std::vector<double> score_candidates_naive(LlamaForCausalLM& model, const std::vector<int32_t>& prompt,
                                           const std::vector<std::vector<int32_t>>& candidates);
// Greedy decoding with a KV cache until EOS or `max_new_tokens`; EOS is not returned.
std::vector<int32_t> greedy_generate(LlamaForCausalLM& model, const std::vector<int32_t>& prompt,
                                     int64_t max_new_tokens, int32_t eos_id);

struct EvalResult {
    int64_t examples = 0;
    double accuracy = 0;           // label scoring
    double accuracy_generate = -1; // greedy generation exact match; -1 when not run
    int64_t correct = 0, correct_generate = 0;  // the counts behind the two accuracies
};

struct EvalOptions {
    bool generate = true;
    int64_t limit = 0;  // evaluate the first `limit` examples (0 = all)
    // A client over several ranks: member `member` of `members` evaluates its contiguous share of
    // those examples (train/gradient_sync.h row_share); the members' counts add up to the whole
    // evaluation, example by example the same (every example is scored on its own).
    int member = 0, members = 1;
};

// `references` are the examples' outputs (exact-match targets); `encoded` their encodings.
EvalResult evaluate_classification(LlamaForCausalLM& model, const BpeTokenizer& tokenizer,
                                   const std::vector<EncodedExample>& encoded,
                                   const std::vector<std::string>& references, const LabelSet& labels,
                                   const EvalOptions& options);

}  // namespace h2tune
