// Evaluation: label scoring with a shared prompt cache, greedy generation with a KV cache, and
// the classification accuracy built on both.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "h2tune/core/error.h"
#include "h2tune/data/loader.h"
#include "h2tune/model/llama.h"
#include "h2tune/model/llama_config.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"
#include "h2tune/train/evaluate.h"
#include "h2tune/train/finetune.h"

using namespace h2tune;

namespace {

LlamaConfig tiny_config(int64_t vocab = 320) {
    LlamaConfig c;
    c.vocab_size = vocab;
    c.hidden_size = 64;
    c.intermediate_size = 128;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.max_position_embeddings = 128;
    c.initializer_range = 0.1;  // larger than HF's default so predictions are not nearly uniform
    return c;
}

LlamaForCausalLM tiny_model(uint64_t seed = 7) {
    torch::manual_seed(seed);
    LlamaForCausalLM m(tiny_config());
    m->eval();
    return m;
}

const std::string kText =
    "the quick brown fox jumps over the lazy dog. the lazy dog sleeps in the sun. "
    "a quick brown cat jumps over the sleeping dog and the fox runs into the woods. "
    "the sun sets over the woods and the fox sleeps. the dog wakes and the cat runs. "
    "is it true? answer: yes. answer: no. answer: maybe. the quick fox, the lazy dog.";

const BpeTokenizer& tokenizer() {
    static const BpeTokenizer tok = [] {
        BpeTrainOptions o;
        o.vocab_size = 300;
        return bpe_train({kText, kText}, o);
    }();
    return tok;
}

// Greedy decoding by full forwards over the whole sequence (no cache).
std::vector<int32_t> naive_greedy(LlamaForCausalLM& model, std::vector<int32_t> seq, int64_t max_new, int32_t eos) {
    torch::NoGradGuard no_grad;
    std::vector<int32_t> out;
    for (int64_t i = 0; i < max_new; ++i) {
        std::vector<int64_t> wide(seq.begin(), seq.end());
        torch::Tensor logits = model->forward(torch::tensor(wide, torch::kLong).unsqueeze(0));
        const int32_t next = static_cast<int32_t>(logits[0][-1].argmax().item<int64_t>());
        if (next == eos) break;
        out.push_back(next);
        seq.push_back(next);
    }
    return out;
}

size_t argmax(const std::vector<double>& v) {
    return static_cast<size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

std::vector<EncodedExample> encode_prompts(const std::vector<std::string>& prompts, const std::string& label) {
    const BpeTokenizer& tok = tokenizer();
    std::vector<EncodedExample> out;
    for (const auto& p : prompts) {
        EncodedExample e;
        e.prompt = tok.encode(p);
        e.response = tok.encode(label);
        e.response.push_back(tok.eos_id());
        out.push_back(std::move(e));
    }
    return out;
}

const std::vector<std::string> kPrompts = {
    "the quick brown fox jumps over the lazy dog. is it true? answer:",
    "the lazy dog sleeps in the sun. answer:",
    "a cat runs. answer:",
    "the sun sets over the woods and the fox sleeps. is it true? answer:",
    "dog? answer:",
    "the brown cat jumps. answer:",
};

}  // namespace

// ---------------------------------------------------------------- scoring

TEST(ScoreCandidates, CachedScoringMatchesNaiveScoring) {
    LlamaForCausalLM model = tiny_model();
    const std::vector<std::vector<int32_t>> prompts = {
        {17}, {5, 9, 200, 3, 77}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 250}};
    const std::vector<std::vector<std::vector<int32_t>>> sets = {
        {{42}},                                      // one single-token candidate
        {{42}, {43}, {299}},                         // several single-token candidates
        {{10, 20, 30}, {7}, {100, 101}, {5, 5, 5, 5, 5, 5}},  // unequal lengths, short ones padded
        {{1, 2}, {2, 1}},                            // same tokens, different order
        {{8, 9, 10, 11, 12, 13, 14, 15}, {8, 9, 10, 11, 12, 13, 14, 16}},  // differ only at the end
    };
    for (const auto& prompt : prompts)
        for (const auto& cands : sets) {
            const auto cached = score_candidates(model, prompt, cands);
            const auto naive = score_candidates_naive(model, prompt, cands);
            ASSERT_EQ(cached.size(), cands.size());
            ASSERT_EQ(naive.size(), cands.size());
            for (size_t c = 0; c < cands.size(); ++c) {
                EXPECT_NEAR(cached[c], naive[c], 1e-4) << "prompt " << prompt.size() << " candidate " << c;
                EXPECT_LT(cached[c], 0.0);
                EXPECT_TRUE(std::isfinite(cached[c]));
            }
        }
}

TEST(ScoreCandidates, ScoresAreSumsOfTokenLogProbabilities) {
    LlamaForCausalLM model = tiny_model(3);
    const std::vector<int32_t> prompt = {4, 8, 15, 16, 23, 42};
    torch::NoGradGuard no_grad;
    std::vector<int64_t> wide(prompt.begin(), prompt.end());
    wide.push_back(99);
    const torch::Tensor logp = torch::log_softmax(model->forward(torch::tensor(wide, torch::kLong).unsqueeze(0)), -1)[0];
    // A single token: log p(t | prompt) from the prompt's last position.
    const double p_a = logp[5][99].item<double>(), p_b = logp[5][7].item<double>();
    // Two tokens: log p(99 | prompt) + log p(123 | prompt, 99).
    const double p_ab = p_a + logp[6][123].item<double>();
    const auto s = score_candidates(model, prompt, {{99}, {7}, {99, 123}});
    EXPECT_NEAR(s[0], p_a, 1e-4);
    EXPECT_NEAR(s[1], p_b, 1e-4);
    EXPECT_NEAR(s[2], p_ab, 1e-4);
    EXPECT_GT(std::abs(s[0] - s[1]), 1e-3);  // the candidates are really distinguished
    // The order of the candidates does not change their scores.
    const auto r = score_candidates(model, prompt, {{99, 123}, {99}, {7}});
    EXPECT_NEAR(r[0], s[2], 1e-5);
    EXPECT_NEAR(r[1], s[0], 1e-5);
    EXPECT_NEAR(r[2], s[1], 1e-5);
}

TEST(ScoreCandidates, RejectsEmptyInputs) {
    LlamaForCausalLM model = tiny_model();
    EXPECT_THROW(score_candidates(model, {}, {{1}}), DataError);
    EXPECT_THROW(score_candidates(model, {1, 2}, {}), DataError);
    EXPECT_THROW(score_candidates(model, {1, 2}, {{}}), DataError);
    // One empty candidate among non-empty ones has no first token to score.
    EXPECT_THROW(score_candidates(model, {1, 2}, {{3, 4}, {}}), DataError);
    EXPECT_THROW(score_candidates_naive(model, {}, {{1}}), DataError);
    EXPECT_THROW(score_candidates_naive(model, {1, 2}, {{3}, {}}), DataError);
    // Out-of-vocabulary ids are rejected by the model.
    EXPECT_THROW(score_candidates(model, {1, 2}, {{320}}), Error);
    EXPECT_THROW(greedy_generate(model, {}, 4, -1), DataError);
}

// ---------------------------------------------------------------- generation

TEST(GreedyGenerate, MatchesANaiveArgmaxLoop) {
    for (uint64_t seed : {7, 8}) {
        LlamaForCausalLM model = tiny_model(seed);
        for (const auto& prompt : std::vector<std::vector<int32_t>>{{12}, {3, 1, 4, 1, 5, 9, 2, 6}}) {
            const auto expected = naive_greedy(model, prompt, 12, -1);
            ASSERT_EQ(expected.size(), 12u);
            EXPECT_EQ(greedy_generate(model, prompt, 12, -1), expected) << "seed " << seed;
            EXPECT_EQ(greedy_generate(model, prompt, 5, -1),
                      std::vector<int32_t>(expected.begin(), expected.begin() + 5));
            EXPECT_TRUE(greedy_generate(model, prompt, 0, -1).empty());
            EXPECT_EQ(greedy_generate(model, prompt, 1, -1), std::vector<int32_t>{expected[0]});

            // Stopping at EOS: make the last newly seen token the EOS id.
            size_t k = 0;
            for (size_t i = 0; i < expected.size(); ++i)
                if (std::find(expected.begin(), expected.begin() + static_cast<long>(i), expected[i]) ==
                    expected.begin() + static_cast<long>(i))
                    k = i;
            const int32_t eos = expected[k];
            const auto stopped = greedy_generate(model, prompt, 12, eos);
            EXPECT_EQ(stopped, std::vector<int32_t>(expected.begin(), expected.begin() + static_cast<long>(k)))
                << "eos " << eos;
            EXPECT_EQ(std::count(stopped.begin(), stopped.end(), eos), 0);
        }
    }
}

// ---------------------------------------------------------------- label sets

TEST(LabelSet, AppendsEosToEveryLabel) {
    const BpeTokenizer& tok = tokenizer();
    ASSERT_GE(tok.eos_id(), 0);
    const std::vector<std::string> labels = {"yes", "no", "maybe", "the quick fox"};
    const LabelSet set = make_label_set(labels, tok);
    EXPECT_EQ(set.labels, labels);
    ASSERT_EQ(set.ids.size(), labels.size());
    for (size_t i = 0; i < labels.size(); ++i) {
        auto expected = tok.encode(labels[i]);
        ASSERT_FALSE(expected.empty());
        expected.push_back(tok.eos_id());
        EXPECT_EQ(set.ids[i], expected) << labels[i];
        EXPECT_EQ(tok.decode(std::vector<int32_t>(set.ids[i].begin(), set.ids[i].end() - 1)), labels[i]);
    }
    EXPECT_THROW(make_label_set({}, tok), DataError);
}

// ---------------------------------------------------------------- evaluate_classification

TEST(EvaluateClassification, AccuracyMatchesAManualArgmaxOverScores) {
    LlamaForCausalLM model = tiny_model(11);
    const BpeTokenizer& tok = tokenizer();
    const LabelSet labels = make_label_set({"yes", "no", "maybe", "the fox"}, tok);
    const auto encoded = encode_prompts(kPrompts, "yes");

    // References: the model's own choice for even examples, another label for odd ones.
    std::vector<std::string> references;
    int64_t expected_correct = 0;
    for (size_t i = 0; i < encoded.size(); ++i) {
        const size_t best = argmax(score_candidates_naive(model, encoded[i].prompt, labels.ids));
        if (i % 2 == 0) {
            references.push_back(labels.labels[best]);
            ++expected_correct;
        } else {
            references.push_back(labels.labels[(best + 1) % labels.labels.size()]);
        }
    }
    EvalOptions opts;
    opts.generate = false;
    model->train();
    const EvalResult r = evaluate_classification(model, tok, encoded, references, labels, opts);
    EXPECT_TRUE(model->is_training());  // the mode is restored
    EXPECT_EQ(r.examples, 6);
    EXPECT_DOUBLE_EQ(r.accuracy, static_cast<double>(expected_correct) / 6.0);
    EXPECT_EQ(r.accuracy_generate, -1.0);

    opts.limit = 2;  // the first two: one right, one wrong
    model->eval();
    const EvalResult l = evaluate_classification(model, tok, encoded, references, labels, opts);
    EXPECT_FALSE(model->is_training());
    EXPECT_EQ(l.examples, 2);
    EXPECT_DOUBLE_EQ(l.accuracy, 0.5);

    opts.limit = 100;  // more than there are
    EXPECT_EQ(evaluate_classification(model, tok, encoded, references, labels, opts).examples, 6);

    // A client over several ranks: the members' shares of the first five examples (2, 2 and 1)
    // add up to the whole evaluation, count for count; with six members the sixth gets none.
    opts.limit = 5;
    const EvalResult whole = evaluate_classification(model, tok, encoded, references, labels, opts);
    int64_t examples = 0, correct = 0;
    for (int member = 0; member < 3; ++member) {
        opts.member = member;
        opts.members = 3;
        const EvalResult part = evaluate_classification(model, tok, encoded, references, labels, opts);
        EXPECT_EQ(part.examples, member < 2 ? 2 : 1);
        examples += part.examples;
        correct += part.correct;
    }
    EXPECT_EQ(examples, 5);
    EXPECT_EQ(correct, whole.correct);
    opts.member = 5;
    opts.members = 6;
    EXPECT_EQ(evaluate_classification(model, tok, encoded, references, labels, opts).examples, 0);
}

TEST(EvaluateClassification, GenerationAccuracyMatchesAManualGreedyLoop) {
    // The model's vocabulary (320) is larger than the tokenizer's (300), as with real checkpoints
    // whose embeddings are padded: generated ids the tokenizer cannot decode count as wrong.
    const BpeTokenizer& tok = tokenizer();
    const LabelSet labels = make_label_set({"yes", "no"}, tok);
    const auto encoded = encode_prompts(kPrompts, "yes");
    size_t max_label = 0;
    for (const auto& ids : labels.ids) max_label = std::max(max_label, ids.size());
    // References: the greedy output for the first three examples (padded with blanks: the
    // comparison is trimmed), something never generated for the rest. The first random model
    // (by seed) that generates both decodable and undecodable outputs is the one tested, so the
    // test does not hang on one seed's draws.
    for (uint64_t seed = 12; seed < 112; ++seed) {
        LlamaForCausalLM model = tiny_model(seed);
        ASSERT_LT(tok.vocab_size(), model->config().vocab_size);
        std::vector<std::string> references;
        int64_t expected = 0, undecodable = 0;
        for (size_t i = 0; i < encoded.size(); ++i) {
            // evaluate_classification generates up to (longest label + 2) tokens.
            const auto gen = naive_greedy(model, encoded[i].prompt, static_cast<int64_t>(max_label) + 2, tok.eos_id());
            const bool decodable =
                std::all_of(gen.begin(), gen.end(), [&](int32_t id) { return id < tok.vocab_size(); });
            undecodable += !decodable;
            if (i < 3 && decodable) {
                references.push_back("  " + tok.decode(gen) + "\n");
                ++expected;
            } else {
                references.push_back("no such output");
            }
        }
        if (expected == 0 || undecodable == 0) continue;
        EvalOptions opts;
        const EvalResult r = evaluate_classification(model, tok, encoded, references, labels, opts);
        EXPECT_EQ(r.examples, 6);
        EXPECT_DOUBLE_EQ(r.accuracy_generate, static_cast<double>(expected) / 6.0) << "seed " << seed;
        return;
    }
    FAIL() << "no seed in [12, 112) gives a model that generates both decodable and undecodable outputs";
}

TEST(EvaluateClassification, ModelTrainedOnOneLabelAlwaysAnswersIt) {
    const BpeTokenizer& tok = tokenizer();
    LlamaForCausalLM model = tiny_model(13);
    const auto train = encode_prompts(kPrompts, "yes");
    const Batch batch = make_batch(train, {0, 1, 2, 3, 4, 5}, tok.pad_id());
    FinetuneOptions o;
    o.schedule.lr = 3e-3;
    o.schedule.total_steps = 30;
    o.schedule.warmup_steps = 3;
    AdapterTrainer trainer(model->parameters(), o);
    model->train();
    double loss = 0;
    for (int k = 0; k < 30; ++k) {
        torch::Tensor l = response_loss(model->forward(batch.input_ids, batch.attention_mask), batch.labels);
        loss = l.item<double>();
        trainer.step(l);
    }
    ASSERT_LT(loss, 0.2) << "the model did not learn the fixed answer";
    model->eval();

    const LabelSet labels = make_label_set({"no", "yes", "maybe"}, tok);
    const std::vector<std::string> references = {"yes", "no", "yes", "maybe", "yes", "no"};
    const EvalResult r = evaluate_classification(model, tok, train, references, labels, EvalOptions());
    EXPECT_EQ(r.examples, 6);
    EXPECT_DOUBLE_EQ(r.accuracy, 0.5);
    EXPECT_DOUBLE_EQ(r.accuracy_generate, 0.5);
    const std::vector<std::string> all_yes(6, "yes");
    const EvalResult y = evaluate_classification(model, tok, train, all_yes, labels, EvalOptions());
    EXPECT_DOUBLE_EQ(y.accuracy, 1.0);
    EXPECT_DOUBLE_EQ(y.accuracy_generate, 1.0);
    EXPECT_EQ(tok.decode(greedy_generate(model, train[0].prompt, 8, tok.eos_id())), "yes");
}

TEST(EvaluateClassification, RejectsMismatchedSizes) {
    LlamaForCausalLM model = tiny_model();
    const BpeTokenizer& tok = tokenizer();
    const LabelSet labels = make_label_set({"yes", "no"}, tok);
    const auto encoded = encode_prompts({"a? answer:", "b? answer:"}, "yes");
    EXPECT_THROW(evaluate_classification(model, tok, encoded, {"yes"}, labels, EvalOptions()), DataError);
    EXPECT_THROW(evaluate_classification(model, tok, encoded, {"yes", "no", "yes"}, labels, EvalOptions()), DataError);
    LabelSet broken = labels;
    broken.labels.pop_back();  // ids without a label
    EXPECT_THROW(evaluate_classification(model, tok, encoded, {"yes", "no"}, broken, EvalOptions()), DataError);
    const EvalResult empty = evaluate_classification(model, tok, {}, {}, labels, EvalOptions());
    EXPECT_EQ(empty.examples, 0);
    EXPECT_EQ(empty.accuracy, 0.0);
}
