#include "h2tune/train/perplexity.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "h2tune/core/error.h"

namespace h2tune {

std::vector<ScoringWindow> scoring_windows(int64_t length, int64_t context, int64_t stride) {
    if (length < 2) throw ConfigError("perplexity: the text has " + std::to_string(length) +
                                      " token(s); at least 2 are needed to score one");
    if (context < 2) throw ConfigError("perplexity: the context must be at least 2 tokens, got " + std::to_string(context));
    if (stride < 1 || stride >= context)
        throw ConfigError("perplexity: the stride must be in [1, context - 1] = [1, " + std::to_string(context - 1) +
                          "], got " + std::to_string(stride));
    std::vector<ScoringWindow> out;
    int64_t scored_to = 1;  // every position below this is scored (position 0 never is)
    int64_t end = std::min(context, length);
    while (true) {
        ScoringWindow w;
        w.end = end;
        w.begin = std::max<int64_t>(0, end - context);
        w.score_from = scored_to;
        out.push_back(w);
        scored_to = end;
        if (end == length) break;
        end = std::min(end + stride, length);
    }
    return out;
}

TokenLogProbs score_token_sequence(LlamaForCausalLM& model, const std::vector<int32_t>& ids, int64_t context,
                                   int64_t stride) {
    const int64_t vocab = model->config().vocab_size;
    for (size_t i = 0; i < ids.size(); ++i)
        if (ids[i] < 0 || ids[i] >= vocab)
            throw ModelError("perplexity: token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                             " is outside the model's vocabulary of " + std::to_string(vocab));
    TokenLogProbs out;
    out.windows = scoring_windows(static_cast<int64_t>(ids.size()), context, stride);
    out.logprob.reserve(ids.size() - 1);

    torch::NoGradGuard no_grad;
    model->eval();
    const torch::Device device = model->output_weight().device();
    const torch::Tensor all = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kInt64);
    for (const ScoringWindow& w : out.windows) {
        const torch::Tensor input = all.slice(0, w.begin, w.end).unsqueeze(0).to(device);
        // Position p predicts token p + 1: the head only runs on the rows this window scores.
        const torch::Tensor hidden = model->forward_hidden(input).squeeze(0);            // [T, hidden]
        const torch::Tensor rows = hidden.slice(0, w.score_from - 1 - w.begin, w.end - 1 - w.begin);
        const torch::Tensor logp = torch::log_softmax(model->logits(rows).to(torch::kFloat32), -1);
        const torch::Tensor targets = all.slice(0, w.score_from, w.end).to(device).unsqueeze(1);
        const torch::Tensor picked = logp.gather(1, targets).squeeze(1).to(torch::kCPU, torch::kFloat64).contiguous();
        const double* p = picked.data_ptr<double>();
        out.logprob.insert(out.logprob.end(), p, p + picked.numel());
    }
    for (double v : out.logprob) out.total += v;
    out.mean_nll = -out.total / static_cast<double>(out.logprob.size());
    out.perplexity = std::exp(out.mean_nll);
    return out;
}

}  // namespace h2tune
