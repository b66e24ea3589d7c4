#include <gtest/gtest.h>

#include <torch/torch.h>

#include <algorithm>
#include <set>

#include "h2tune/core/error.h"
#include "h2tune/core/rng.h"
#include "h2tune/data/loader.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"

using namespace h2tune;

namespace {

const BpeTokenizer& tokenizer() {
    static const BpeTokenizer tok = [] {
        std::vector<std::string> texts = {
            "### Instruction:\nIs this email spam or ham?\n\n### Input:\nfree money now\n\n### Response:\nspam",
            "the quick brown fox jumps over the lazy dog", "ham spam ham spam response input instruction"};
        BpeTrainOptions opt;
        opt.vocab_size = 320;
        opt.min_frequency = 1;
        return bpe_train(texts, opt);
    }();
    return tok;
}

Example make_example(const std::string& input, const std::string& output, long line = 1) {
    Example e;
    e.instruction = "Is this email spam or ham?";
    e.input = input;
    e.output = output;
    e.line = line;
    return e;
}

std::vector<EncodedExample> encoded_set(int n) {
    std::vector<Example> ex;
    for (int i = 0; i < n; ++i) ex.push_back(make_example("message number " + std::to_string(i), i % 2 ? "spam" : "ham", i + 1));
    return encode_examples(ex, tokenizer(), 96, "set.jsonl");
}

}  // namespace

TEST(Encode, PromptThenResponseWithEos) {
    auto enc = encode_examples({make_example("free money", "spam")}, tokenizer(), 128, "x.jsonl");
    ASSERT_EQ(enc.size(), 1u);
    EXPECT_FALSE(enc[0].truncated);
    EXPECT_EQ(enc[0].response.back(), tokenizer().eos_id());
    std::vector<int32_t> resp(enc[0].response.begin(), enc[0].response.end() - 1);
    EXPECT_EQ(tokenizer().decode(resp), "spam");
    EXPECT_EQ(tokenizer().decode(enc[0].prompt), prompt_head(make_example("free money", "spam")) + prompt_tail());
}

TEST(Encode, OverLongInputIsTruncatedKeepingMarkerAndResponse) {
    std::string long_input;
    for (int i = 0; i < 200; ++i) long_input += "word" + std::to_string(i) + " ";
    EncodeStats stats;
    auto enc = encode_examples({make_example(long_input, "ham")}, tokenizer(), 48, "x.jsonl", &stats);
    EXPECT_TRUE(enc[0].truncated);
    EXPECT_EQ(stats.truncated, 1);
    EXPECT_EQ(static_cast<int>(enc[0].prompt.size() + enc[0].response.size()), 48);
    const std::string prompt = tokenizer().decode(enc[0].prompt);
    EXPECT_EQ(prompt.substr(prompt.size() - prompt_tail().size()), prompt_tail());
}

TEST(Encode, ResponseThatCannotFitNamesFileAndLine) {
    std::string long_output(400, 'x');
    try {
        encode_examples({make_example("a", "ham", 1), make_example("b", long_output, 7)}, tokenizer(), 32, "y.jsonl");
        FAIL();
    } catch (const DataError& e) {
        EXPECT_NE(std::string(e.what()).find("y.jsonl:7"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("max_seq_len"), std::string::npos);
    }
}

TEST(Encode, UnicodeAndInvalidUtf8SurviveEncoding) {
    std::string weird = "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82 \xff\xfe broken";
    auto enc = encode_examples({make_example(weird, "ham")}, tokenizer(), 256, "u.jsonl");
    EXPECT_NE(tokenizer().decode(enc[0].prompt).find(weird), std::string::npos);
}

TEST(Batch, RightPaddedWithResponseOnlyLabels) {
    auto enc = encoded_set(3);
    enc[1].prompt.resize(enc[1].prompt.size() - 3);  // make lengths differ
    const int32_t pad = 7;
    Batch b = make_batch(enc, {0, 1}, pad);
    const int64_t len0 = static_cast<int64_t>(enc[0].prompt.size() + enc[0].response.size());
    const int64_t len1 = static_cast<int64_t>(enc[1].prompt.size() + enc[1].response.size());
    ASSERT_EQ(b.input_ids.size(1), std::max(len0, len1));
    EXPECT_EQ(b.attention_mask[0].sum().item<int64_t>(), len0);
    EXPECT_EQ(b.attention_mask[1].sum().item<int64_t>(), len1);
    EXPECT_EQ(b.tokens, len0 + len1);
    // Padding holds the pad id and no label; the prompt has no label; the response is labelled.
    for (int64_t t = len1; t < b.input_ids.size(1); ++t) {
        EXPECT_EQ(b.input_ids[1][t].item<int64_t>(), pad);
        EXPECT_EQ(b.labels[1][t].item<int64_t>(), kIgnoreIndex);
    }
    const int64_t p0 = static_cast<int64_t>(enc[0].prompt.size());
    for (int64_t t = 0; t < p0; ++t) EXPECT_EQ(b.labels[0][t].item<int64_t>(), kIgnoreIndex);
    for (int64_t t = p0; t < len0; ++t) EXPECT_EQ(b.labels[0][t].item<int64_t>(), b.input_ids[0][t].item<int64_t>());
    EXPECT_EQ(b.response_tokens, static_cast<int64_t>(enc[0].response.size() + enc[1].response.size()));
}

TEST(Loader, EpochIsAPermutationAndCoversEveryExampleOnce) {
    DataLoader loader(encoded_set(10), 4, 0, 42, 3);
    EXPECT_EQ(loader.batches_per_epoch(), 3);
    auto order = loader.epoch_order(0);
    std::set<int64_t> seen(order.begin(), order.end());
    EXPECT_EQ(seen.size(), 10u);
    EXPECT_EQ(loader.next().input_ids.size(0), 4);
    EXPECT_EQ(loader.next().input_ids.size(0), 4);
    EXPECT_EQ(loader.next().input_ids.size(0), 2);  // last partial batch
    EXPECT_TRUE(loader.at_epoch_start());
    EXPECT_EQ(loader.position().epoch, 1);
}

TEST(Loader, ShufflingIsDeterministicPerSeedStreamAndEpoch) {
    DataLoader a(encoded_set(50), 8, 0, 42, 3), b(encoded_set(50), 8, 0, 42, 3);
    DataLoader other_seed(encoded_set(50), 8, 0, 43, 3), other_stream(encoded_set(50), 8, 0, 42, 4);
    EXPECT_EQ(a.epoch_order(0), b.epoch_order(0));
    EXPECT_NE(a.epoch_order(0), a.epoch_order(1));
    EXPECT_NE(a.epoch_order(0), other_seed.epoch_order(0));
    EXPECT_NE(a.epoch_order(0), other_stream.epoch_order(0));
    // Pinned values: the permutation must not change across compilers or standard libraries,
    // or resumed runs would diverge.
    EXPECT_EQ(stream_key(1, 2, 3, 4), 12637524773458985772ULL);
    EXPECT_EQ(permutation(8, 12345), (std::vector<int64_t>{2, 4, 1, 5, 7, 6, 3, 0}));
}

TEST(Loader, ResumingFromAPositionGivesTheSameBatches) {
    DataLoader a(encoded_set(20), 3, 0, 9, 1);
    for (int i = 0; i < 5; ++i) a.next();
    DataLoader::Position pos = a.position();
    Batch expected = a.next();
    DataLoader b(encoded_set(20), 3, 0, 9, 1);
    b.set_position(pos);
    Batch got = b.next();
    EXPECT_TRUE(torch::equal(expected.input_ids, got.input_ids));
    EXPECT_TRUE(torch::equal(expected.labels, got.labels));
    EXPECT_THROW(b.set_position({0, 20}), DataError);
    EXPECT_THROW(b.set_position({-1, 0}), DataError);
}

TEST(Loader, RejectsEmptyDataAndBadBatchSize) {
    EXPECT_THROW(DataLoader({}, 4, 0, 1, 1), DataError);
    EXPECT_THROW(DataLoader(encoded_set(3), 0, 0, 1, 1), ConfigError);
}

TEST(Rng, BelowIsInRangeAndUniformInUnitInterval) {
    SplitMix64 rng(99);
    for (int i = 0; i < 1000; ++i) {
        EXPECT_LT(rng.below(7), 7u);
        double u = rng.uniform();
        EXPECT_GE(u, 0.0);
        EXPECT_LT(u, 1.0);
    }
    EXPECT_NE(stream_key(1, 0, 0, 0), stream_key(1, 0, 0, 1));
    EXPECT_NE(stream_key(1, 1, 0, 0), stream_key(1, 0, 1, 0));
}
