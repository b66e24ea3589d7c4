#include "h2tune/train/evaluate.h"

#include <torch/torch.h>

#include <algorithm>

#include "h2tune/core/error.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"
#include "h2tune/train/gradient_sync.h"

namespace h2tune {

namespace {

// The device of the model's weights: inputs go there, scores come back to the CPU.
torch::Device model_device(LlamaForCausalLM& model) { return model->parameters().front().device(); }

torch::Tensor to_ids(const std::vector<int32_t>& ids, torch::Device device) {
    std::vector<int64_t> wide(ids.begin(), ids.end());
    return torch::tensor(wide, torch::kInt64).unsqueeze(0).to(device);
}

std::string trim(const std::string& s) {
    auto b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return "";
    return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

}  // namespace

LabelSet make_label_set(const std::vector<std::string>& labels, const BpeTokenizer& tokenizer) {
    if (labels.empty()) throw DataError("label set is empty");
    LabelSet set;
    set.labels = labels;
    for (const auto& l : labels) {
        auto ids = tokenizer.encode(l);
        ids.push_back(tokenizer.eos_id());
        set.ids.push_back(std::move(ids));
    }
    return set;
}

namespace {

// The prompt run once: its keys and values, and the logits of the token after it. Both
// the label scores and greedy generation continue from here, so an evaluated example costs one
// prompt pass, not two; the LM head runs only at the prompt's last position.
struct PromptPass {
    KvCache cache;
    torch::Tensor next_logits;  // [vocab] float32, on the model's device
};

PromptPass run_prompt(LlamaForCausalLM& model, const std::vector<int32_t>& prompt) {
    PromptPass pass;
    torch::Tensor ids = to_ids(prompt, model_device(model));
    torch::Tensor hidden = model->model->forward(ids, torch::ones_like(ids), {}, &pass.cache);
    pass.next_logits = model->logits(hidden.select(1, hidden.size(1) - 1))[0];
    return pass;
}

void require_scorable(const std::vector<int32_t>& prompt, const std::vector<std::vector<int32_t>>& candidates) {
    bool any_empty = false;
    for (const auto& c : candidates) any_empty = any_empty || c.empty();
    // Every candidate needs a first token (it is scored from the prompt's last position).
    if (candidates.empty() || any_empty || prompt.empty())
        throw DataError("scoring needs a prompt and non-empty candidates");
}

// Sum of log p(candidate) after the prompt; `pass.cache` is left as it was.
std::vector<double> score_after(LlamaForCausalLM& model, const PromptPass& pass,
                                const std::vector<std::vector<int32_t>>& candidates) {
    const int64_t C = static_cast<int64_t>(candidates.size());
    size_t max_len = 0;
    for (const auto& c : candidates) max_len = std::max(max_len, c.size());
    const torch::Device dev = model_device(model);
    // The first candidate token is predicted by the prompt's last position.
    torch::Tensor first_logp = torch::log_softmax(pass.next_logits, -1).cpu();

    // Candidates right-padded into one batch that attends to C copies of the prompt cache.
    const int64_t L = static_cast<int64_t>(max_len);
    torch::Tensor ids = torch::zeros({C, L}, torch::kInt64);
    torch::Tensor mask = torch::zeros({C, L}, torch::kInt64);
    auto ids_a = ids.accessor<int64_t, 2>();
    auto mask_a = mask.accessor<int64_t, 2>();
    for (int64_t c = 0; c < C; ++c)
        for (size_t t = 0; t < candidates[static_cast<size_t>(c)].size(); ++t) {
            ids_a[c][static_cast<int64_t>(t)] = candidates[static_cast<size_t>(c)][t];
            mask_a[c][static_cast<int64_t>(t)] = 1;
        }
    ids = ids.to(dev);
    mask = mask.to(dev);
    KvCache expanded = pass.cache.repeat_interleave(C);
    torch::Tensor full_mask = torch::cat({expanded.mask, mask}, 1);
    torch::Tensor logp = torch::log_softmax(model->forward_with_cache(ids, full_mask, {}, &expanded), -1).cpu();

    std::vector<double> scores(static_cast<size_t>(C));
    auto first = first_logp.accessor<float, 1>();
    auto lp = logp.accessor<float, 3>();
    for (int64_t c = 0; c < C; ++c) {
        const auto& cand = candidates[static_cast<size_t>(c)];
        double s = first[cand[0]];
        for (size_t t = 1; t < cand.size(); ++t) s += lp[c][static_cast<int64_t>(t) - 1][cand[t]];
        scores[static_cast<size_t>(c)] = s;
    }
    return scores;
}

// Greedy decoding from the prompt's pass; extends `pass.cache` with the generated tokens.
std::vector<int32_t> generate_after(LlamaForCausalLM& model, PromptPass& pass, int64_t max_new_tokens,
                                    int32_t eos_id) {
    const torch::Device dev = model_device(model);
    const auto ids_options = torch::TensorOptions().dtype(torch::kInt64).device(dev);
    std::vector<int32_t> out;
    torch::Tensor next_logits = pass.next_logits;
    for (int64_t i = 0; i < max_new_tokens; ++i) {
        const int32_t next = static_cast<int32_t>(next_logits.argmax().item<int64_t>());
        if (next == eos_id) break;
        out.push_back(next);
        if (i + 1 == max_new_tokens) break;  // the last token needs no successor
        torch::Tensor ids = torch::full({1, 1}, static_cast<int64_t>(next), ids_options);
        torch::Tensor mask = torch::ones({1, pass.cache.length() + 1}, ids_options);
        next_logits = model->forward_with_cache(ids, mask, {}, &pass.cache)[0][-1];
    }
    return out;
}

}  // namespace

std::vector<double> score_candidates(LlamaForCausalLM& model, const std::vector<int32_t>& prompt,
                                     const std::vector<std::vector<int32_t>>& candidates) {
    torch::NoGradGuard no_grad;
    require_scorable(prompt, candidates);
    return score_after(model, run_prompt(model, prompt), candidates);
}

std::vector<double> score_candidates_naive(LlamaForCausalLM& model, const std::vector<int32_t>& prompt,
                                           const std::vector<std::vector<int32_t>>& candidates) {
    torch::NoGradGuard no_grad;
    require_scorable(prompt, candidates);
    std::vector<double> scores;
    for (const auto& cand : candidates) {
        std::vector<int32_t> seq = prompt;
        seq.insert(seq.end(), cand.begin(), cand.end());
        torch::Tensor logp = torch::log_softmax(model->forward(to_ids(seq, model_device(model))), -1)[0].cpu();
        auto lp = logp.accessor<float, 2>();
        double s = 0;
        for (size_t t = 0; t < cand.size(); ++t) s += lp[static_cast<int64_t>(prompt.size() + t) - 1][cand[t]];
        scores.push_back(s);
    }
    return scores;
}

std::vector<int32_t> greedy_generate(LlamaForCausalLM& model, const std::vector<int32_t>& prompt,
                                     int64_t max_new_tokens, int32_t eos_id) {
    torch::NoGradGuard no_grad;
    if (prompt.empty()) throw DataError("generation needs a non-empty prompt");
    if (max_new_tokens <= 0) return {};
    PromptPass pass = run_prompt(model, prompt);
    return generate_after(model, pass, max_new_tokens, eos_id);
}

EvalResult evaluate_classification(LlamaForCausalLM& model, const BpeTokenizer& tokenizer,
                                   const std::vector<EncodedExample>& encoded,
                                   const std::vector<std::string>& references, const LabelSet& labels,
                                   const EvalOptions& options) {
    if (encoded.size() != references.size()) throw DataError("evaluation: examples and references differ in count");
    if (labels.ids.size() != labels.labels.size()) throw DataError("evaluation: label set has labels without ids");
    torch::NoGradGuard no_grad;
    const bool was_training = model->is_training();
    model->eval();
    size_t max_label = 0;
    for (const auto& ids : labels.ids) max_label = std::max(max_label, ids.size());
    int64_t n = static_cast<int64_t>(encoded.size());
    if (options.limit > 0) n = std::min(n, options.limit);
    const RowShare share = row_share(n, options.member, options.members);
    n = share.end - share.begin;
    int64_t correct = 0, correct_generate = 0;
    for (int64_t i = share.begin; i < share.end; ++i) {
        const auto& ex = encoded[static_cast<size_t>(i)];
        const std::string& ref = references[static_cast<size_t>(i)];
        require_scorable(ex.prompt, labels.ids);
        PromptPass pass = run_prompt(model, ex.prompt);
        auto scores = score_after(model, pass, labels.ids);
        size_t best = static_cast<size_t>(std::max_element(scores.begin(), scores.end()) - scores.begin());
        if (labels.labels[best] == ref) ++correct;
        if (options.generate) {
            auto gen = generate_after(model, pass, static_cast<int64_t>(max_label) + 2, tokenizer.eos_id());
            // A model's vocabulary may be larger than its tokenizer's (padded embeddings); an id
            // the tokenizer cannot decode never matches a reference.
            const bool decodable = std::all_of(gen.begin(), gen.end(),
                                               [&](int32_t id) { return id >= 0 && id < tokenizer.vocab_size(); });
            if (decodable && trim(tokenizer.decode(gen)) == trim(ref)) ++correct_generate;
        }
    }
    if (was_training) model->train();
    EvalResult r;
    r.examples = n;
    r.correct = correct;
    r.correct_generate = correct_generate;
    r.accuracy = n ? static_cast<double>(correct) / static_cast<double>(n) : 0.0;
    r.accuracy_generate = options.generate && n ? static_cast<double>(correct_generate) / static_cast<double>(n) : -1.0;
    return r;
}

}  // namespace h2tune
