// Activation checkpointing of the decoder blocks (model/block_checkpoint.h): a step with
// checkpointing gives the same loss and bit-identical gradients as one without, for triple
// adapters whose middle matrices are computed outside the blocks from a shared leaf, with padding,
// for a Gemma 2 block (sandwich norms, soft-capping, sliding windows), and for a base that is being
// trained (pretraining); evaluation and the KV cache never take the checkpoint path; misuse
// (an adapter replaced before the backward, an adapter that does not list its tensors) is refused.
//
// Bitwise equality is expected, not a tolerance: the recomputation runs the same kernels on the
// same inputs with the same thread count, and every gradient is accumulated in the same order
// (each block's graph is rebuilt with the same node order; the one difference, gradients of one
// tensor read by several blocks being summed per block first, is the case checked with a tolerance
// in MiddleSharedByEveryBlockAgreesToRounding).
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "h2tune/adapter/triple_adapter.h"
#include "h2tune/core/error.h"
#include "h2tune/model/block_checkpoint.h"
#include "h2tune/model/llama.h"
#include "h2tune/model/llama_config.h"

using namespace h2tune;

namespace {

constexpr int64_t kRank = 4;

LlamaConfig read_config(const std::string& model_type, nlohmann::json extra = nlohmann::json::object()) {
    nlohmann::json j = {{"model_type", model_type},
                        {"vocab_size", 97},
                        {"hidden_size", 64},
                        {"intermediate_size", 96},
                        {"num_hidden_layers", 3},
                        {"num_attention_heads", 4},
                        {"num_key_value_heads", 2},
                        {"max_position_embeddings", 64},
                        {"initializer_range", 0.1}};
    for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
    return LlamaConfig::from_json(j);
}

LlamaConfig llama_config() { return read_config("llama", {{"tie_word_embeddings", false}}); }

// Gemma 2: sandwich norms with unit offsets, scaled embeddings, GeGLU, attention and final logit
// soft-capping, and a sliding window (even layers) shorter than the test sequences.
LlamaConfig gemma2_config() {
    return read_config("gemma2", {{"head_dim", 16}, {"sliding_window", 4}, {"query_pre_attn_scalar", 16}});
}

// How each adapter's middle matrix T is computed from the leaf D [n, r, r].
enum class Middles {
    per_adapter,  // T_i = D[i] * 1.0: every adapter its own T (as H2Tune's relation-mixed views)
    per_layer,    // T = D[layer] * 1.0 shared by a layer's 7 projections (the block lists it 7 times)
    shared,       // one T = D[0] * 1.0 for every adapter of every block
};

struct TestModel {
    LlamaForCausalLM model{nullptr};
    std::vector<TripleAdapter> adapters;  // projections() order
    torch::Tensor middle_leaf;            // D, requires grad
};

// A random model (float32, CPU); with adapters, the base is frozen and every one of the 7
// projections of every layer gets a triple adapter with a nonzero B.
TestModel make_setup(const LlamaConfig& config, bool adapters, uint64_t seed = 11) {
    torch::manual_seed(seed);
    TestModel s;
    s.model = LlamaForCausalLM(config);
    if (!adapters) return s;
    for (auto& p : s.model->parameters()) p.requires_grad_(false);
    for (auto& [name, proj] : s.model->projections()) {
        TripleAdapter ad(TripleAdapterOptions(proj->options.in_features(), proj->options.out_features(), kRank));
        {
            torch::NoGradGuard no_grad;
            ad->lora_B.normal_(0.0, 0.1);
        }
        proj->set_adapter(ad.ptr());
        s.adapters.push_back(ad);
    }
    s.middle_leaf = (torch::randn({static_cast<int64_t>(s.adapters.size()), kRank, kRank}) * 0.2).requires_grad_(true);
    return s;
}

void set_middles(TestModel& s, Middles how) {
    const int64_t per_layer = static_cast<int64_t>(llama_projection_names().size());
    std::vector<torch::Tensor> layer_middles;
    for (int64_t l = 0; l < s.model->num_layers(); ++l) layer_middles.push_back(s.middle_leaf[l] * 1.0);
    const torch::Tensor shared = s.middle_leaf[0] * 1.0;
    for (size_t i = 0; i < s.adapters.size(); ++i) {
        const auto ii = static_cast<int64_t>(i);
        switch (how) {
            case Middles::per_adapter: s.adapters[i]->set_middle(s.middle_leaf[ii] * 1.0); break;
            case Middles::per_layer: s.adapters[i]->set_middle(layer_middles[static_cast<size_t>(ii / per_layer)]); break;
            case Middles::shared: s.adapters[i]->set_middle(shared); break;
        }
    }
}

// Every tensor whose gradient a step produces: the adapters' A and B, D, and the base parameters
// that require grad.
std::vector<std::pair<std::string, torch::Tensor>> trained_tensors(const TestModel& s) {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (const auto& p : s.model->named_parameters())
        if (p.value().requires_grad()) out.emplace_back(p.key(), p.value());
    for (size_t i = 0; i < s.adapters.size(); ++i) {
        if (s.adapters[i]->lora_A.requires_grad())
            out.emplace_back("adapter " + std::to_string(i) + " lora_A", s.adapters[i]->lora_A);
        if (s.adapters[i]->lora_B.requires_grad())
            out.emplace_back("adapter " + std::to_string(i) + " lora_B", s.adapters[i]->lora_B);
    }
    if (s.middle_leaf.defined()) out.emplace_back("D", s.middle_leaf);
    return out;
}

struct Step {
    torch::Tensor loss, logits;
    std::vector<torch::Tensor> grads;  // trained_tensors order
    BlockCheckpointCounts counts;      // checkpointed forwards / recomputations during the step
};

// Mean next-token cross-entropy over real tokens, backward, gradients collected.
Step step(TestModel& s, bool checkpointing, const torch::Tensor& ids, const torch::Tensor& mask,
          Middles middles = Middles::per_adapter) {
    s.model->set_activation_checkpointing(checkpointing);
    const auto tensors = trained_tensors(s);
    for (const auto& [name, t] : tensors) t.mutable_grad() = torch::Tensor();
    if (!s.adapters.empty()) set_middles(s, middles);
    const BlockCheckpointCounts before = block_checkpoint_counts();

    Step out;
    const torch::Tensor logits = s.model->forward(ids, mask);
    const torch::Tensor logp = torch::log_softmax(logits.slice(1, 0, -1), -1);
    const torch::Tensor target = ids.slice(1, 1);
    const torch::Tensor nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1);
    const torch::Tensor weight = mask.defined() ? mask.slice(1, 1).to(torch::kFloat32) : torch::ones_like(nll);
    out.loss = (nll * weight).sum() / weight.sum();
    out.loss.backward();
    out.logits = logits.detach();

    const BlockCheckpointCounts after = block_checkpoint_counts();
    out.counts.forwards = after.forwards - before.forwards;
    out.counts.recomputations = after.recomputations - before.recomputations;
    for (const auto& [name, t] : tensors) out.grads.push_back(t.grad());
    return out;
}

// Same loss and logits, bit-identical gradients, every one of them present and not all zero.
void expect_identical(const TestModel& s, const Step& plain, const Step& ckpt) {
    EXPECT_TRUE(torch::equal(plain.loss, ckpt.loss)) << plain.loss.item<double>() << " vs " << ckpt.loss.item<double>();
    EXPECT_TRUE(torch::equal(plain.logits, ckpt.logits));
    const auto tensors = trained_tensors(s);
    ASSERT_EQ(plain.grads.size(), tensors.size());
    ASSERT_EQ(ckpt.grads.size(), tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
        const std::string& name = tensors[i].first;
        ASSERT_TRUE(plain.grads[i].defined()) << name;
        ASSERT_TRUE(ckpt.grads[i].defined()) << name << ": no gradient with checkpointing";
        EXPECT_GT(plain.grads[i].abs().sum().item<double>(), 0.0) << name;
        EXPECT_TRUE(torch::equal(plain.grads[i], ckpt.grads[i]))
            << name << ": max difference " << (plain.grads[i] - ckpt.grads[i]).abs().max().item<double>();
    }
}

torch::Tensor random_ids(int64_t b, int64_t t, uint64_t seed = 5) {
    torch::manual_seed(seed);
    return torch::randint(1, 97, {b, t}, torch::kLong);
}

// Rows left-padded by 0, 3 and 6 tokens.
torch::Tensor left_padding_mask(int64_t t) {
    torch::Tensor m = torch::ones({3, t}, torch::kLong);
    m[1].slice(0, 0, 3).zero_();
    m[2].slice(0, 0, 6).zero_();
    return m;
}

// A projection adapter that does not list what it differentiates.
struct UnlistedAdapter : ProjectionAdapter {
    torch::Tensor m;
    torch::Tensor delta(const torch::Tensor& x) override { return torch::matmul(x, m); }
};

}  // namespace

TEST(BlockCheckpoint, AdapterGradientsAreBitIdentical) {
    TestModel s = make_setup(llama_config(), /*adapters=*/true);
    const torch::Tensor ids = random_ids(2, 12);
    const Step plain = step(s, false, ids, {});
    const Step ckpt = step(s, true, ids, {});
    EXPECT_EQ(plain.counts.forwards, 0);
    EXPECT_EQ(plain.counts.recomputations, 0);
    EXPECT_EQ(ckpt.counts.forwards, 3);  // every block checkpointed, each recomputed once
    EXPECT_EQ(ckpt.counts.recomputations, 3);
    expect_identical(s, plain, ckpt);
    // Only adapters and D are trained: the frozen base gets no gradient either way.
    for (const auto& p : s.model->parameters()) EXPECT_FALSE(p.grad().defined());
}

// H2Tune's shared step: A and B frozen, only the middles (hence D) trained; the blocks' only
// differentiable tensors are then non-leaf T computed outside them.
TEST(BlockCheckpoint, OnlyMiddlesTrained) {
    TestModel s = make_setup(llama_config(), true);
    for (auto& ad : s.adapters) {
        ad->lora_A.requires_grad_(false);
        ad->lora_B.requires_grad_(false);
    }
    ASSERT_EQ(trained_tensors(s).size(), 1u);  // D
    const torch::Tensor ids = random_ids(2, 12, 4);
    const Step plain = step(s, false, ids, {});
    const Step ckpt = step(s, true, ids, {});
    EXPECT_EQ(ckpt.counts.recomputations, 3);
    expect_identical(s, plain, ckpt);
}

TEST(BlockCheckpoint, LeftPaddingAndGemma2Blocks) {
    for (const LlamaConfig& config : {llama_config(), gemma2_config()}) {
        SCOPED_TRACE(config.model_type);
        TestModel s = make_setup(config, true);
        const torch::Tensor ids = random_ids(3, 10, 6);
        const torch::Tensor mask = left_padding_mask(10);
        const Step plain = step(s, false, ids, mask);
        const Step ckpt = step(s, true, ids, mask);
        EXPECT_EQ(ckpt.counts.recomputations, 3);
        expect_identical(s, plain, ckpt);
    }
    EXPECT_TRUE(gemma2_config().sandwich_norms);
    EXPECT_TRUE(gemma2_config().layer_slides(0));
}

// A middle matrix read by all 7 projections of a block is one input of that block's checkpoint:
// listed once, its gradient returned (and accumulated) once, not 7 times.
TEST(BlockCheckpoint, MiddleSharedWithinABlockIsCountedOnce) {
    TestModel s = make_setup(llama_config(), true);
    const torch::Tensor ids = random_ids(2, 9, 7);
    const Step plain = step(s, false, ids, {}, Middles::per_layer);
    const Step ckpt = step(s, true, ids, {}, Middles::per_layer);
    expect_identical(s, plain, ckpt);
}

// One T read by every block: its gradient is summed per block inside each recomputation and then
// across blocks, where the plain backward sums all 21 contributions in one sequence. Floating-point
// addition is not associative, so this case agrees to rounding only (all other gradients stay
// bit-identical).
TEST(BlockCheckpoint, MiddleSharedByEveryBlockAgreesToRounding) {
    TestModel s = make_setup(llama_config(), true);
    const torch::Tensor ids = random_ids(2, 9, 8);
    const Step plain = step(s, false, ids, {}, Middles::shared);
    const Step ckpt = step(s, true, ids, {}, Middles::shared);
    EXPECT_TRUE(torch::equal(plain.loss, ckpt.loss));
    const auto tensors = trained_tensors(s);
    for (size_t i = 0; i < tensors.size(); ++i) {
        const double scale = plain.grads[i].abs().max().item<double>();
        ASSERT_GT(scale, 0.0) << tensors[i].first;
        EXPECT_LE((plain.grads[i] - ckpt.grads[i]).abs().max().item<double>(), 1e-6 * scale) << tensors[i].first;
        if (tensors[i].first != "D") {
            EXPECT_TRUE(torch::equal(plain.grads[i], ckpt.grads[i])) << tensors[i].first;
        }
    }
}

// Pretraining: the base itself requires grad (no adapters); every parameter's gradient, the tied
// embedding and the norms included, is bit-identical, and the input of the first block (the
// embedding output) requires grad too.
TEST(BlockCheckpoint, TrainedBaseParametersAreBitIdentical) {
    LlamaConfig tied = llama_config();
    tied.tie_word_embeddings = true;
    for (const LlamaConfig& config : {llama_config(), tied, gemma2_config()}) {
        SCOPED_TRACE(config.model_type + (config.tie_word_embeddings ? " tied" : ""));
        TestModel s = make_setup(config, /*adapters=*/false);
        const torch::Tensor ids = random_ids(3, 10, 9);
        const torch::Tensor mask = left_padding_mask(10);
        const Step plain = step(s, false, ids, mask);
        const Step ckpt = step(s, true, ids, mask);
        EXPECT_EQ(ckpt.counts.recomputations, 3);
        EXPECT_EQ(trained_tensors(s).size(), s.model->parameters().size());
        expect_identical(s, plain, ckpt);
    }
}

// A frozen model without adapters has nothing to differentiate in its blocks: they run plainly.
TEST(BlockCheckpoint, NothingRequiringGradRunsPlainly) {
    TestModel s = make_setup(llama_config(), false);
    for (auto& p : s.model->parameters()) p.requires_grad_(false);
    s.model->set_activation_checkpointing(true);
    const BlockCheckpointCounts before = block_checkpoint_counts();
    const torch::Tensor logits = s.model->forward(random_ids(2, 6));
    EXPECT_FALSE(logits.requires_grad());
    EXPECT_EQ(block_checkpoint_counts().forwards, before.forwards);
}

// Evaluation (NoGradGuard) and the KV cache run the blocks plainly whatever the option says, with
// the same outputs.
TEST(BlockCheckpoint, EvaluationAndKvCacheDoNotCheckpoint) {
    TestModel s = make_setup(gemma2_config(), true);
    set_middles(s, Middles::per_adapter);
    const torch::Tensor ids = random_ids(3, 10, 10);
    const torch::Tensor mask = left_padding_mask(10);
    auto eval = [&](bool checkpointing) {
        s.model->set_activation_checkpointing(checkpointing);
        torch::NoGradGuard no_grad;
        return s.model->forward(ids, mask);
    };
    const BlockCheckpointCounts before = block_checkpoint_counts();
    const torch::Tensor plain = eval(false);
    const torch::Tensor ckpt = eval(true);
    EXPECT_TRUE(torch::equal(plain, ckpt));
    EXPECT_EQ(block_checkpoint_counts().forwards, before.forwards);

    // With grad enabled and a cache: plain blocks (the cache is filled once), logits as without.
    s.model->set_activation_checkpointing(true);
    KvCache cache;
    const torch::Tensor cached = s.model->forward_with_cache(ids, mask, {}, &cache);
    EXPECT_EQ(block_checkpoint_counts().forwards, before.forwards);
    EXPECT_TRUE(cached.requires_grad());
    EXPECT_TRUE(torch::equal(cached.detach(), plain));
    EXPECT_EQ(cache.length(), 10);
    ASSERT_EQ(cache.keys.size(), 3u);
    EXPECT_EQ(cache.keys[0].size(2), 10);
}

TEST(BlockCheckpoint, OptionIsOffByDefaultAndSurvivesClone) {
    TestModel s = make_setup(llama_config(), false);
    EXPECT_FALSE(s.model->activation_checkpointing());
    s.model->set_activation_checkpointing(true);
    EXPECT_TRUE(s.model->activation_checkpointing());
    EXPECT_TRUE(s.model->model->activation_checkpointing());
    const auto copy = std::dynamic_pointer_cast<LlamaForCausalLMImpl>(s.model->clone());
    ASSERT_TRUE(copy);
    EXPECT_TRUE(copy->activation_checkpointing());
    s.model->set_activation_checkpointing(false);
    EXPECT_FALSE(s.model->model->activation_checkpointing());
}

// The backward recomputes with the adapters' tensors as they are then; if a middle matrix was
// replaced after the forward, that would differentiate another function: refused.
TEST(BlockCheckpoint, MiddleReplacedBeforeBackwardIsRefused) {
    TestModel s = make_setup(llama_config(), true);
    s.model->set_activation_checkpointing(true);
    set_middles(s, Middles::per_adapter);
    const torch::Tensor loss = s.model->forward(random_ids(2, 6)).pow(2).mean();
    set_middles(s, Middles::per_adapter);  // new T tensors (same values)
    try {
        loss.backward();
        FAIL() << "expected an error";
    } catch (const std::exception& e) {
        EXPECT_NE(std::string(e.what()).find("changed between its forward"), std::string::npos) << e.what();
    }
}

// An adapter that does not say what it differentiates cannot be checkpointed (its gradients would
// be lost silently); without checkpointing, or in evaluation, it works as before.
TEST(BlockCheckpoint, AdapterWithoutListedTensorsIsRefused) {
    TestModel s = make_setup(llama_config(), false);
    for (auto& p : s.model->parameters()) p.requires_grad_(false);
    auto adapter = std::make_shared<UnlistedAdapter>();
    adapter->m = (torch::randn({64, 32}) * 0.01).requires_grad_(true);
    s.model->projection(1, "v_proj")->set_adapter(adapter);
    const torch::Tensor ids = random_ids(2, 6);
    s.model->set_activation_checkpointing(true);
    try {
        s.model->forward(ids);
        FAIL() << "expected ModelError";
    } catch (const ModelError& e) {
        EXPECT_NE(std::string(e.what()).find("differentiable_tensors"), std::string::npos) << e.what();
    }
    {
        torch::NoGradGuard no_grad;
        EXPECT_NO_THROW(s.model->forward(ids));
    }
    s.model->set_activation_checkpointing(false);
    s.model->forward(ids).sum().backward();
    EXPECT_TRUE(adapter->m.grad().defined());
}

// checkpoint_block on its own: constants (undefined ones too) reach the block in both passes and
// only the listed tensors and x get gradients.
TEST(BlockCheckpoint, GenericBlockWithConstants) {
    torch::manual_seed(3);
    const torch::Tensor w = torch::randn({5, 5}).requires_grad_(true);
    const torch::Tensor x0 = torch::randn({4, 5}).requires_grad_(true);
    const torch::Tensor shift = torch::randn({5});
    auto f = [&](const torch::Tensor& x, const std::vector<torch::Tensor>& c) {
        EXPECT_EQ(c.size(), 2u);
        EXPECT_FALSE(c[1].defined());
        return torch::tanh(torch::matmul(x, w) + c[0]);
    };
    CheckpointedBlock block{f, [&] { return std::vector<torch::Tensor>{w, w, torch::Tensor(), shift}; }};
    const torch::Tensor x = x0 * 2.0;
    const torch::Tensor plain_out = f(x, {shift, torch::Tensor()});
    const auto plain = torch::autograd::grad({plain_out.sum()}, {x0, w});
    const torch::Tensor ckpt_out = checkpoint_block(block, x, {shift, torch::Tensor()});
    EXPECT_TRUE(torch::equal(plain_out, ckpt_out));
    const auto ckpt = torch::autograd::grad({ckpt_out.sum()}, {x0, w});
    EXPECT_TRUE(torch::equal(plain[0], ckpt[0]));
    EXPECT_TRUE(torch::equal(plain[1], ckpt[1]));  // w listed twice, its gradient counted once
}
