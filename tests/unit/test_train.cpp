// Adapters and fine-tuning: the triple-matrix adapter's math, attaching adapters to a frozen base,
// PEFT export and reload, the response-only loss, the learning-rate schedule and the trainer.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "h2tune/adapter/triple_adapter.h"
#include "h2tune/core/error.h"
#include "h2tune/data/loader.h"
#include "h2tune/model/llama.h"
#include "h2tune/model/llama_config.h"
#include "h2tune/model/safetensors.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"
#include "h2tune/train/adapted_model.h"
#include "h2tune/train/finetune.h"

namespace fs = std::filesystem;
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
    c.initializer_range = 0.1;  // larger than HF's default so logits are not nearly uniform
    return c;
}

LlamaForCausalLM tiny_model(uint64_t seed = 7, int64_t vocab = 320) {
    torch::manual_seed(seed);
    LlamaForCausalLM m(tiny_config(vocab));
    m->eval();
    return m;
}

torch::Tensor random_ids(int64_t b, int64_t t, int64_t vocab = 320, uint64_t seed = 3) {
    torch::manual_seed(seed);
    return torch::randint(0, vocab, {b, t}, torch::kLong);
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
    return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

std::string temp_path(const std::string& name) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    fs::path p = fs::path(::testing::TempDir()) / ("h2tune_train_" + std::to_string(::getpid()) + "_" +
                                                  info->test_suite_name() + "_" + info->name() + "_" + name);
    fs::remove(p);
    return p.string();
}

// Fills every adapter's B (and optionally a middle T) with random values so that it is non-trivial.
void randomise_adapters(AdaptedModel& adapted, uint64_t seed, bool with_middle) {
    torch::manual_seed(seed);
    torch::NoGradGuard no_grad;
    for (auto& a : adapted.adapters) {
        a->lora_B.normal_(0.0, 0.05);
        if (with_middle) a->set_middle(torch::randn({a->options.rank(), a->options.rank()}) * 0.3);
    }
}

const std::string kText =
    "the quick brown fox jumps over the lazy dog. the lazy dog sleeps in the sun. "
    "a quick brown cat jumps over the sleeping dog and the fox runs into the woods. "
    "the sun sets over the woods and the fox sleeps. the dog wakes and the cat runs. "
    "answer: yes. answer: no. answer: maybe. the quick fox, the lazy dog, the brown cat.";

const BpeTokenizer& tokenizer() {
    static const BpeTokenizer tok = [] {
        BpeTrainOptions o;
        o.vocab_size = 300;
        return bpe_train({kText, kText}, o);
    }();
    return tok;
}

}  // namespace

// ---------------------------------------------------------------- TripleAdapter math

TEST(TripleAdapter, ShapesAndInitialisation) {
    torch::manual_seed(1);
    TripleAdapter a(TripleAdapterOptions(12, 10, 4).alpha(8.0));
    EXPECT_EQ(a->lora_A.sizes(), (std::vector<int64_t>{4, 12}));
    EXPECT_EQ(a->lora_B.sizes(), (std::vector<int64_t>{10, 4}));
    EXPECT_DOUBLE_EQ(a->scale(), 2.0);
    EXPECT_TRUE(a->lora_B.eq(0).all().item<bool>());
    EXPECT_GT(a->lora_A.abs().sum().item<double>(), 0.0);
    // Kaiming-uniform with a = sqrt(5) on fan_in 12: U(-1/sqrt(12), 1/sqrt(12)).
    EXPECT_LE(a->lora_A.abs().max().item<double>(), 1.0 / std::sqrt(12.0) + 1e-6);
    EXPECT_FALSE(a->middle().defined());
    EXPECT_EQ(a->parameters().size(), 2u);
    EXPECT_THROW(TripleAdapter(TripleAdapterOptions(12, 10, 0)), ConfigError);
}

TEST(TripleAdapter, DeltaEqualsTheDenseTripleProduct) {
    torch::manual_seed(2);
    const int64_t din = 12, dout = 10, r = 4;
    TripleAdapter a(TripleAdapterOptions(din, dout, r).alpha(6.0));
    torch::Tensor T = torch::randn({r, r}) * 0.5;
    {
        torch::NoGradGuard no_grad;
        a->lora_A.normal_(0.0, 0.5);
        a->lora_B.normal_(0.0, 0.5);
    }
    a->set_middle(T);
    ASSERT_TRUE(a->middle().defined());
    const double s = 6.0 / 4.0;

    // The dense update s * B (T + I) A in float64.
    const torch::Tensor A = a->lora_A.detach().to(torch::kFloat64), B = a->lora_B.detach().to(torch::kFloat64);
    const torch::Tensor Ti = T.to(torch::kFloat64) + torch::eye(r, torch::kFloat64);
    const torch::Tensor W = s * B.matmul(Ti).matmul(A);  // [dout, din]

    for (const auto& shape : std::vector<std::vector<int64_t>>{{5, din}, {2, 3, din}}) {
        torch::Tensor x = torch::randn(shape);
        torch::Tensor expected = x.to(torch::kFloat64).matmul(W.t());
        torch::Tensor got = a->delta(x);
        ASSERT_EQ(got.sizes(), expected.sizes());
        EXPECT_LT(max_diff(got, expected), 1e-5);
        EXPECT_GT(expected.abs().max().item<double>(), 0.1);  // a non-trivial comparison
    }

    // The middle matters: without it the result is different.
    torch::Tensor x = torch::randn({5, din});
    torch::Tensor with_middle = a->delta(x);
    a->set_middle({});
    EXPECT_FALSE(a->middle().defined());
    torch::Tensor plain = a->delta(x);
    EXPECT_GT(max_diff(with_middle, plain), 1e-3);
    // Plain LoRA: s * B A x.
    torch::Tensor expected = s * x.to(torch::kFloat64).matmul(B.matmul(A).t());
    EXPECT_LT(max_diff(plain, expected), 1e-5);
}

TEST(TripleAdapter, PeftFactorsMultiplyToTheEffectiveUpdate) {
    torch::manual_seed(3);
    const int64_t din = 9, dout = 7, r = 3;
    TripleAdapter a(TripleAdapterOptions(din, dout, r).alpha(5.0));
    {
        torch::NoGradGuard no_grad;
        a->lora_B.normal_();
    }
    for (bool middle : {false, true}) {
        if (middle) a->set_middle(torch::randn({r, r}));
        auto [pa, pb] = a->peft_factors();
        EXPECT_EQ(pa.sizes(), (std::vector<int64_t>{r, din}));
        EXPECT_EQ(pb.sizes(), (std::vector<int64_t>{dout, r}));
        EXPECT_FALSE(pa.requires_grad());
        EXPECT_FALSE(pb.requires_grad());
        // The effective dense update, read off the adapter itself: delta(I) = (s B (T+I) A)^T.
        torch::Tensor dense = a->delta(torch::eye(din)).detach().t();
        EXPECT_LT(max_diff(pb.matmul(pa), dense), 1e-5) << "middle " << middle;
        EXPECT_GT(dense.abs().max().item<double>(), 0.1);
        // The factors are copies: modifying them leaves the adapter alone.
        pb.zero_();
        EXPECT_GT(a->lora_B.abs().sum().item<double>(), 0.0);
    }
}

TEST(TripleAdapter, GradientsReachAAndBAndTheMiddle) {
    torch::manual_seed(4);
    TripleAdapter a(TripleAdapterOptions(6, 5, 2));
    {
        torch::NoGradGuard no_grad;
        a->lora_B.normal_();
    }
    torch::Tensor source = torch::randn({2, 2}, torch::requires_grad());
    a->set_middle(source * 2.0);  // T computed from a leaf: gradients flow back into it
    a->delta(torch::randn({3, 6})).pow(2).sum().backward();
    ASSERT_TRUE(a->lora_A.grad().defined());
    ASSERT_TRUE(a->lora_B.grad().defined());
    ASSERT_TRUE(source.grad().defined());
    EXPECT_GT(a->lora_A.grad().abs().sum().item<double>(), 0.0);
    EXPECT_GT(a->lora_B.grad().abs().sum().item<double>(), 0.0);
    EXPECT_GT(source.grad().abs().sum().item<double>(), 0.0);
}

TEST(TripleAdapter, SetMiddleRejectsWrongShapes) {
    TripleAdapter a(TripleAdapterOptions(6, 5, 3));
    EXPECT_THROW(a->set_middle(torch::zeros({3, 4})), ConfigError);
    EXPECT_THROW(a->set_middle(torch::zeros({2, 2})), ConfigError);
    EXPECT_THROW(a->set_middle(torch::zeros({3})), ConfigError);
    EXPECT_THROW(a->set_middle(torch::zeros({1, 3, 3})), ConfigError);
    EXPECT_FALSE(a->middle().defined());  // a rejected middle is not kept
    a->set_middle(torch::zeros({3, 3}));
    EXPECT_TRUE(a->middle().defined());
}

// ---------------------------------------------------------------- attach_adapters

TEST(AttachAdapters, FreshAdaptersLeaveLogitsBitIdentical) {
    LlamaForCausalLM model = tiny_model();
    const torch::Tensor ids = random_ids(2, 9);
    torch::Tensor base;
    {
        torch::NoGradGuard no_grad;
        base = model->forward(ids);
    }
    AdaptedModel adapted = attach_adapters(model, adapter_module_types(), 4, 16.0, 11);
    ASSERT_EQ(adapted.adapters.size(), 14u);
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(model->forward(ids), base));
    // With B = 0 even a middle matrix changes nothing.
    for (auto& a : adapted.adapters) a->set_middle(torch::randn({4, 4}));
    EXPECT_TRUE(torch::equal(model->forward(ids), base));
    // ...while a non-zero B does (the comparison above can fail).
    randomise_adapters(adapted, 5, false);
    EXPECT_GT(max_diff(model->forward(ids), base), 1e-4);
}

TEST(AttachAdapters, FreezesTheBaseAndAttachesOnlyTheRequestedModules) {
    LlamaForCausalLM model = tiny_model();
    for (const auto& p : model->parameters()) ASSERT_TRUE(p.requires_grad());
    const std::vector<std::string> modules = {"q", "v", "up"};
    AdaptedModel adapted = attach_adapters(model, modules, 4, 8.0, 1);
    for (const auto& p : model->named_parameters()) EXPECT_FALSE(p.value().requires_grad()) << p.key();
    EXPECT_EQ(adapted.rank, 4);
    EXPECT_EQ(adapted.alpha, 8.0);

    const std::vector<std::string> names = {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                                            "model.layers.0.mlp.up_proj",      "model.layers.1.self_attn.q_proj",
                                            "model.layers.1.self_attn.v_proj", "model.layers.1.mlp.up_proj"};
    EXPECT_EQ(adapted.names, names);
    EXPECT_EQ(adapted.module_types, (std::vector<std::string>{"q", "v", "up", "q", "v", "up"}));
    EXPECT_EQ(adapted.layers, (std::vector<int64_t>{0, 0, 0, 1, 1, 1}));
    ASSERT_EQ(adapted.adapters.size(), 6u);

    // Exactly the requested projections carry an adapter, and it is the one listed.
    const std::set<std::string> wanted(names.begin(), names.end());
    for (const auto& [name, proj] : model->projections()) {
        if (wanted.count(name)) {
            const size_t i = static_cast<size_t>(std::find(names.begin(), names.end(), name) - names.begin());
            EXPECT_EQ(proj->adapter().get(), static_cast<ProjectionAdapter*>(adapted.adapters[i].get())) << name;
            EXPECT_EQ(adapted.adapters[i]->lora_A.size(1), proj->options.in_features()) << name;
            EXPECT_EQ(adapted.adapters[i]->lora_B.size(0), proj->options.out_features()) << name;
        } else {
            EXPECT_EQ(proj->adapter(), nullptr) << name;
        }
    }
    // v_proj maps to the single key/value head: [kv_heads * head_dim, r].
    EXPECT_EQ(adapted.adapters[1]->lora_B.sizes(), (std::vector<int64_t>{32, 4}));
    EXPECT_EQ(adapted.adapters[2]->lora_B.sizes(), (std::vector<int64_t>{128, 4}));

    const auto params = adapted.adapter_parameters();
    EXPECT_EQ(params.size(), static_cast<size_t>(2 * 2 * 3));  // 2 * layers * modules
    for (const auto& p : params) EXPECT_TRUE(p.requires_grad());
    for (size_t i = 0; i < adapted.adapters.size(); ++i) {
        EXPECT_TRUE(params[2 * i].is_same(adapted.adapters[i]->lora_A));
        EXPECT_TRUE(params[2 * i + 1].is_same(adapted.adapters[i]->lora_B));
    }
    // The base model's parameter list is unchanged (adapters are not registered into it).
    EXPECT_EQ(model->parameters().size(), tiny_model()->parameters().size());

    // Gradients reach only the adapters.
    torch::Tensor loss = model->forward(random_ids(1, 6)).pow(2).mean();
    ASSERT_TRUE(loss.requires_grad());
    loss.backward();
    for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined());
    EXPECT_TRUE(adapted.adapters[0]->lora_B.grad().defined());
}

TEST(AttachAdapters, NamesEveryModuleTypeLikeHuggingFace) {
    AdaptedModel adapted = attach_adapters(tiny_model(), adapter_module_types(), 2, 4.0, 1);
    ASSERT_EQ(adapted.names.size(), 14u);
    EXPECT_EQ(adapted.names[0], "model.layers.0.self_attn.q_proj");
    EXPECT_EQ(adapted.names[3], "model.layers.0.self_attn.o_proj");
    EXPECT_EQ(adapted.names[4], "model.layers.0.mlp.gate_proj");
    EXPECT_EQ(adapted.names[12], "model.layers.1.mlp.up_proj");
    EXPECT_EQ(adapted.names[13], "model.layers.1.mlp.down_proj");
    EXPECT_EQ(adapted.adapter_parameters().size(), static_cast<size_t>(2 * 2 * 7));
    // The names are the model's own projection names.
    const auto projections = tiny_model()->projections();
    for (size_t i = 0; i < projections.size(); ++i) EXPECT_EQ(adapted.names[i], projections[i].first);
}

TEST(AttachAdapters, InitialisationDependsOnlyOnTheKey) {
    const std::vector<std::string> modules = {"q", "down"};
    LlamaForCausalLM ma = tiny_model(), mb = tiny_model(), mc = tiny_model();
    // The global generator's state before attaching does not matter.
    torch::manual_seed(100);
    AdaptedModel a = attach_adapters(ma, modules, 4, 8.0, 42);
    torch::manual_seed(200);
    (void)torch::rand({17});
    AdaptedModel b = attach_adapters(mb, modules, 4, 8.0, 42);
    AdaptedModel c = attach_adapters(mc, modules, 4, 8.0, 43);
    ASSERT_EQ(a.adapters.size(), 4u);
    for (size_t i = 0; i < a.adapters.size(); ++i) {
        EXPECT_TRUE(torch::equal(a.adapters[i]->lora_A, b.adapters[i]->lora_A)) << i;
        EXPECT_FALSE(torch::equal(a.adapters[i]->lora_A, c.adapters[i]->lora_A)) << i;
    }
    // Adapters of one model are not copies of each other.
    EXPECT_FALSE(torch::equal(a.adapters[0]->lora_A, a.adapters[2]->lora_A));
}

TEST(AttachAdapters, RejectsAnEmptySelection) {
    EXPECT_THROW(attach_adapters(tiny_model(), {}, 4, 8.0, 1), ConfigError);
    EXPECT_THROW(attach_adapters(tiny_model(), {"q_proj"}, 4, 8.0, 1), ConfigError);
    EXPECT_THROW(attach_adapters(tiny_model(), {"q"}, 0, 8.0, 1), ConfigError);
}

// ---------------------------------------------------------------- save / load

TEST(AdapterFile, SaveLoadReproducesTheTrainedAdapter) {
    const std::vector<std::string> modules = {"q", "v", "gate", "down"};
    LlamaForCausalLM base = tiny_model(21);
    AdaptedModel trained = attach_adapters(base, modules, 4, 16.0, 1);
    randomise_adapters(trained, 9, /*with_middle=*/true);
    const torch::Tensor ids = random_ids(2, 10);
    torch::NoGradGuard no_grad;
    const torch::Tensor expected = base->forward(ids);
    const std::string path = temp_path("adapter.safetensors");
    save_adapter(trained, path);

    // PEFT layout: A [r, d_in], B' = s B (T + I) [d_out, r]; metadata says lora_alpha = r.
    std::map<std::string, std::string> meta;
    auto tensors = safetensors_load(path, &meta);
    EXPECT_EQ(tensors.size(), 2 * trained.adapters.size());
    EXPECT_EQ(meta.at("r"), "4");
    EXPECT_EQ(meta.at("lora_alpha"), "4");
    const auto peft = trained.peft_state();
    for (const auto& [name, t] : peft) {
        ASSERT_TRUE(tensors.count(name)) << name;
        EXPECT_TRUE(torch::equal(tensors.at(name), t)) << name;
    }
    EXPECT_EQ(tensors.at("model.layers.1.mlp.down_proj.lora_B.weight").sizes(), (std::vector<int64_t>{64, 4}));

    // A fresh attach (other init key, so A differs too) onto an identical base.
    LlamaForCausalLM fresh_base = tiny_model(21);
    AdaptedModel fresh = attach_adapters(fresh_base, modules, 4, 16.0, 77);
    const torch::Tensor before = fresh_base->forward(ids);
    EXPECT_GT(max_diff(before, expected), 1e-4);
    load_adapter(fresh, path);
    const torch::Tensor after = fresh_base->forward(ids);
    EXPECT_LT(max_diff(after, expected), 1e-5);
    for (const auto& a : fresh.adapters) EXPECT_FALSE(a->middle().defined());
    // Loaded parameters stay trainable leaves.
    for (const auto& p : fresh.adapter_parameters()) EXPECT_TRUE(p.requires_grad());

    // Loading into a model with a different alpha still reproduces the function (B is rescaled).
    LlamaForCausalLM other_alpha_base = tiny_model(21);
    AdaptedModel other_alpha = attach_adapters(other_alpha_base, modules, 4, 2.0, 5);
    load_adapter(other_alpha, path);
    EXPECT_LT(max_diff(other_alpha_base->forward(ids), expected), 1e-5);
}

TEST(AdapterFile, LoadRejectsMismatchedAdapters) {
    AdaptedModel saved = attach_adapters(tiny_model(), {"q", "v"}, 4, 8.0, 1);
    const std::string path = temp_path("adapter.safetensors");
    save_adapter(saved, path);
    AdaptedModel other_rank = attach_adapters(tiny_model(), {"q", "v"}, 8, 8.0, 1);
    EXPECT_THROW(load_adapter(other_rank, path), ModelError);
    AdaptedModel other_modules = attach_adapters(tiny_model(), {"q", "k"}, 4, 8.0, 1);
    EXPECT_THROW(load_adapter(other_modules, path), ModelError);
    AdaptedModel subset = attach_adapters(tiny_model(), {"v"}, 4, 8.0, 1);
    EXPECT_NO_THROW(load_adapter(subset, path));
    EXPECT_THROW(load_adapter(subset, temp_path("missing.safetensors")), Error);
}

// ---------------------------------------------------------------- response_loss

TEST(ResponseLoss, IsTheMeanCrossEntropyOfTheUnmaskedShiftedLabels) {
    torch::manual_seed(8);
    const int64_t V = 5;
    torch::Tensor logits = torch::randn({2, 4, V}, torch::kFloat64).to(torch::kFloat32);
    // Row 0: labels at t = 2, 3 -> predicted by logits at t = 1, 2.
    // Row 1: one label at t = 3 -> predicted by logits at t = 2. Mean over all 3 tokens.
    torch::Tensor labels = torch::tensor({-100, -100, 2, 4, -100, -100, -100, 3}, torch::kLong).reshape({2, 4});
    auto nll = [&](int64_t b, int64_t t, int64_t target) {
        double m = -1e300;
        for (int64_t v = 0; v < V; ++v) m = std::max(m, logits[b][t][v].item<double>());
        double z = 0;
        for (int64_t v = 0; v < V; ++v) z += std::exp(logits[b][t][v].item<double>() - m);
        return -(logits[b][t][target].item<double>() - m - std::log(z));
    };
    const double expected = (nll(0, 1, 2) + nll(0, 2, 4) + nll(1, 2, 3)) / 3.0;
    const torch::Tensor loss = response_loss(logits, labels);
    EXPECT_EQ(loss.dim(), 0);
    EXPECT_NEAR(loss.item<double>(), expected, 1e-5);
    // Not the mean of per-row means.
    const double per_row = 0.5 * ((nll(0, 1, 2) + nll(0, 2, 4)) / 2.0 + nll(1, 2, 3));
    ASSERT_GT(std::abs(per_row - expected), 1e-3);
}

TEST(ResponseLoss, IgnoresMaskedPositions) {
    torch::manual_seed(9);
    const int64_t V = 7;
    torch::Tensor logits = torch::randn({2, 5, V});
    torch::Tensor labels = torch::tensor({-100, -100, 3, 6, 1, -100, 2, -100, -100, -100}, torch::kLong).reshape({2, 5});
    const double loss = response_loss(logits, labels).item<double>();

    // Positions whose next label is ignored, and each row's last position, predict nothing.
    torch::Tensor changed = logits.clone();
    changed[0][0] = torch::randn({V}) * 10;  // predicts labels[0][1] = -100
    changed[0][4] = torch::randn({V}) * 10;  // last position
    changed[1][1] = torch::randn({V}) * 10;  // predicts labels[1][2] = -100
    changed[1][2] = torch::randn({V}) * 10;
    changed[1][3] = torch::randn({V}) * 10;
    changed[1][4] = torch::randn({V}) * 10;
    EXPECT_EQ(response_loss(changed, labels).item<double>(), loss);

    // Changing a position that predicts a real label changes the loss.
    torch::Tensor relevant = logits.clone();
    relevant[1][0] = torch::randn({V}) * 10;  // predicts labels[1][1] = 2
    EXPECT_NE(response_loss(relevant, labels).item<double>(), loss);

    // Gradients are zero exactly at the ignored positions.
    torch::Tensor leaf = logits.clone().requires_grad_(true);
    response_loss(leaf, labels).backward();
    const torch::Tensor g = leaf.grad().abs().sum(-1);
    for (auto [b, t] : std::vector<std::pair<int, int>>{{0, 0}, {0, 4}, {1, 1}, {1, 2}, {1, 3}, {1, 4}})
        EXPECT_EQ(g[b][t].item<double>(), 0.0) << b << "," << t;
    for (auto [b, t] : std::vector<std::pair<int, int>>{{0, 1}, {0, 2}, {0, 3}, {1, 0}})
        EXPECT_GT(g[b][t].item<double>(), 0.0) << b << "," << t;
}

TEST(ResponseLoss, MatchesTheLossOfAPaddedBatch) {
    // make_batch's labels: padding and prompts are ignored, so a padded batch's loss equals the
    // token-weighted mean of the per-example losses.
    LlamaForCausalLM model = tiny_model();
    std::vector<EncodedExample> ex(2);
    ex[0].prompt = {5, 6, 7, 8};
    ex[0].response = {9, 10, 1};
    ex[1].prompt = {11, 12};
    ex[1].response = {13, 1};
    torch::NoGradGuard no_grad;
    Batch both = make_batch(ex, {0, 1}, 0);
    Batch b0 = make_batch(ex, {0}, 0), b1 = make_batch(ex, {1}, 0);
    const double l = response_loss(model->forward(both.input_ids, both.attention_mask), both.labels).item<double>();
    const double l0 = response_loss(model->forward(b0.input_ids), b0.labels).item<double>();
    const double l1 = response_loss(model->forward(b1.input_ids), b1.labels).item<double>();
    EXPECT_NEAR(l, (3 * l0 + 2 * l1) / 5.0, 1e-5);
}

TEST(ResponseLoss, TheHeadAtResponseRowsOnlyGivesTheSameLossAndGradients) {
    // The training path (forward_hidden, LM head at the response rows only) against the full-logits
    // loss, on an adapted model with a padded batch: same loss to 1e-6 relative, same adapter
    // gradients, for right and left padding and for labels in the middle of a sequence.
    for (const bool left_padding : {false, true}) {
        LlamaForCausalLM model = tiny_model(11);
        AdaptedModel adapted = attach_adapters(model, adapter_module_types(), 4, 8.0, 5);
        {
            torch::NoGradGuard no_grad;
            torch::manual_seed(12);
            for (auto& a : adapted.adapters) a->lora_B.normal_(0.0, 0.05);
        }
        torch::Tensor ids = random_ids(3, 16, 320, 13);
        torch::Tensor mask = torch::ones({3, 16}, torch::kLong);
        torch::Tensor labels = torch::full({3, 16}, kIgnoreIndex, torch::kLong);
        labels.narrow(1, 10, 6).copy_(ids.narrow(1, 10, 6));  // the "response" of row 0
        labels[1].narrow(0, 5, 4).copy_(ids[1].narrow(0, 5, 4));  // labels in the middle
        labels[1].narrow(0, 9, 7).fill_(kIgnoreIndex);
        if (left_padding) {
            mask[2].narrow(0, 0, 4).fill_(0);
        } else {
            mask[2].narrow(0, 12, 4).fill_(0);
            labels[2].narrow(0, 12, 4).fill_(kIgnoreIndex);
        }

        const std::vector<torch::Tensor> params = adapted.adapter_parameters();
        auto grads = [&](const torch::Tensor& loss) {
            for (auto p : params)
                if (p.grad().defined()) p.mutable_grad().zero_();
            loss.backward();
            std::vector<torch::Tensor> g;
            for (const auto& p : params) g.push_back(p.grad().clone());
            return g;
        };
        const torch::Tensor full = response_loss(model->forward(ids, mask), labels);
        const std::vector<torch::Tensor> g_full = grads(full);
        const ResponseLogits rows = response_logits(model, model->forward_hidden(ids, mask), labels);
        EXPECT_EQ(rows.logits.size(0), labels.narrow(1, 1, 15).ne(kIgnoreIndex).sum().item<int64_t>());
        const torch::Tensor sparse = response_loss(rows);
        const std::vector<torch::Tensor> g_rows = grads(sparse);
        EXPECT_NEAR(sparse.item<double>(), full.item<double>(), 1e-6 * std::abs(full.item<double>())) << left_padding;
        for (size_t i = 0; i < params.size(); ++i)
            EXPECT_TRUE(torch::allclose(g_rows[i], g_full[i], 1e-4, 1e-7)) << i << " " << max_diff(g_rows[i], g_full[i]);
    }
}

TEST(ResponseLoss, ResponseRowsAreThePositionsBeforeEachKeptLabelInOrder) {
    const torch::Tensor labels =
        torch::tensor({-100, -100, 2, 4, -100, -100, 7, -100, -100, 3}, torch::kLong).reshape({2, 5});
    const ResponseRows r = response_rows(labels);
    EXPECT_TRUE(torch::equal(r.rows, torch::tensor({1, 2, 5, 8}, torch::kLong)));
    EXPECT_TRUE(torch::equal(r.targets, torch::tensor({2, 4, 7, 3}, torch::kLong)));
    // No kept label: no rows, and the loss is NaN like the full-logits loss of such a batch.
    const torch::Tensor none = torch::full({2, 5}, kIgnoreIndex, torch::kLong);
    EXPECT_EQ(response_rows(none).rows.numel(), 0);
    LlamaForCausalLM model = tiny_model();
    torch::NoGradGuard no_grad;
    const torch::Tensor ids = random_ids(2, 5);
    EXPECT_TRUE(std::isnan(response_loss(model->forward(ids), none).item<double>()));
    EXPECT_TRUE(std::isnan(response_loss(response_logits(model, model->forward_hidden(ids), none)).item<double>()));
    // forward is the head on forward_hidden.
    EXPECT_TRUE(torch::equal(model->forward(ids), model->logits(model->forward_hidden(ids))));
}

// ---------------------------------------------------------------- schedule

TEST(Schedule, LinearWarmupThenCosineToTheFloor) {
    ScheduleOptions s;
    s.lr = 1e-3;
    s.total_steps = 100;
    s.warmup_steps = 10;
    s.min_lr_ratio = 0.1;
    // Warm-up: linear, reaching the peak at the end of warm-up.
    for (int64_t k = 0; k < 10; ++k) EXPECT_NEAR(scheduled_lr(s, k), 1e-3 * (k + 1) / 10.0, 1e-15) << k;
    EXPECT_NEAR(scheduled_lr(s, 9), 1e-3, 1e-15);
    EXPECT_NEAR(scheduled_lr(s, 10), 1e-3, 1e-15);
    // Cosine: half-way through the decay the rate is half-way between peak and floor.
    EXPECT_NEAR(scheduled_lr(s, 55), 1e-3 * (0.1 + 0.9 * 0.5), 1e-12);
    EXPECT_NEAR(scheduled_lr(s, 10 + 90 / 4), 1e-3 * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 22.0 / 90.0))), 1e-12);
    EXPECT_NEAR(scheduled_lr(s, 100), 1e-4, 1e-15);
    EXPECT_NEAR(scheduled_lr(s, 500), 1e-4, 1e-15);  // stays at the floor
    double peak = 0, prev = 1e9;
    for (int64_t k = 0; k <= 120; ++k) {
        const double lr = scheduled_lr(s, k);
        peak = std::max(peak, lr);
        EXPECT_GE(lr, 1e-4 - 1e-15) << k;
        if (k >= 10) {
            EXPECT_LE(lr, prev) << k;  // monotone non-increasing after warm-up
        } else {
            EXPECT_GT(lr, k == 0 ? 0.0 : scheduled_lr(s, k - 1)) << k;  // strictly increasing before
        }
        prev = lr;
    }
    EXPECT_NEAR(peak, 1e-3, 1e-15);
    EXPECT_GT(scheduled_lr(s, 30), scheduled_lr(s, 80));  // it does decay
}

TEST(Schedule, WithoutWarmupStartsAtThePeak) {
    ScheduleOptions s;
    s.lr = 2e-4;
    s.total_steps = 10;
    s.warmup_steps = 0;
    s.min_lr_ratio = 0.0;
    EXPECT_DOUBLE_EQ(scheduled_lr(s, 0), 2e-4);
    EXPECT_NEAR(scheduled_lr(s, 10), 0.0, 1e-15);
    EXPECT_NEAR(scheduled_lr(s, 5), 1e-4, 1e-15);
    // Degenerate: everything is warm-up.
    ScheduleOptions w;
    w.lr = 1.0;
    w.total_steps = 4;
    w.warmup_steps = 4;
    EXPECT_DOUBLE_EQ(scheduled_lr(w, 0), 0.25);
    EXPECT_DOUBLE_EQ(scheduled_lr(w, 3), 1.0);
    EXPECT_DOUBLE_EQ(scheduled_lr(w, 4), 1.0);
    EXPECT_GE(scheduled_lr(w, 5), w.min_lr_ratio);
}

// ---------------------------------------------------------------- AdapterTrainer

TEST(AdapterTrainer, StepsReduceTheLossAndTouchOnlyItsParameters) {
    LlamaForCausalLM model = tiny_model(31);
    AdaptedModel adapted = attach_adapters(model, {"q", "v", "up", "down"}, 4, 16.0, 3);
    // The trainer gets the adapters of layer 1 only.
    std::vector<torch::Tensor> trained, untouched;
    for (size_t i = 0; i < adapted.adapters.size(); ++i) {
        auto& list = adapted.layers[i] == 1 ? trained : untouched;
        list.push_back(adapted.adapters[i]->lora_A);
        list.push_back(adapted.adapters[i]->lora_B);
    }
    ASSERT_EQ(trained.size(), 8u);
    for (const auto& p : model->parameters()) untouched.push_back(p);
    std::vector<torch::Tensor> untouched_before, trained_before;
    for (const auto& p : untouched) untouched_before.push_back(p.detach().clone());
    for (const auto& p : trained) trained_before.push_back(p.detach().clone());

    FinetuneOptions o;
    o.schedule.lr = 1e-2;
    o.schedule.total_steps = 8;
    o.schedule.warmup_steps = 2;
    o.weight_decay = 0.01;
    AdapterTrainer trainer(trained, o);
    EXPECT_EQ(trainer.global_step(), 0);

    const torch::Tensor ids = random_ids(2, 12, 320, 17);
    torch::Tensor labels = ids.clone();
    labels.narrow(1, 0, 5).fill_(kIgnoreIndex);
    std::vector<double> losses;
    for (int k = 0; k < 8; ++k) {
        torch::Tensor loss = response_loss(model->forward(ids), labels);
        losses.push_back(loss.item<double>());
        const double lr = trainer.step(loss);
        EXPECT_DOUBLE_EQ(lr, scheduled_lr(o.schedule, k));
        EXPECT_EQ(trainer.global_step(), k + 1);
    }
    {
        torch::NoGradGuard no_grad;
        losses.push_back(response_loss(model->forward(ids), labels).item<double>());
    }
    EXPECT_LT(losses.back(), losses.front() - 0.1) << "first " << losses.front() << " last " << losses.back();

    for (size_t i = 0; i < untouched.size(); ++i) EXPECT_TRUE(torch::equal(untouched[i], untouched_before[i])) << i;
    int changed = 0;
    for (size_t i = 0; i < trained.size(); ++i) changed += !torch::equal(trained[i], trained_before[i]);
    EXPECT_EQ(changed, static_cast<int>(trained.size()));

    // The optimiser holds the last scheduled learning rate.
    for (auto& g : trainer.optimizer().param_groups())
        EXPECT_DOUBLE_EQ(static_cast<torch::optim::AdamWOptions&>(g.options()).lr(), scheduled_lr(o.schedule, 7));
    trainer.set_global_step(3);
    EXPECT_EQ(trainer.global_step(), 3);
}

TEST(AdapterTrainer, ClipsTheGlobalGradientNorm) {
    // Adam's update hides the gradient's scale, so the clip is checked on the gradients themselves.
    torch::Tensor w = torch::zeros({4}, torch::requires_grad());
    FinetuneOptions o;
    o.schedule.lr = 0.0;  // no movement; only the gradients are inspected
    o.grad_clip = 1.0;
    AdapterTrainer trainer({w}, o);
    trainer.step((w * torch::tensor({30.0f, 40.0f, 0.0f, 0.0f})).sum());
    ASSERT_TRUE(w.grad().defined());
    EXPECT_NEAR(w.grad().norm().item<double>(), 1.0, 1e-5);
    EXPECT_NEAR(w.grad()[0].item<double>(), 0.6, 1e-5);

    torch::Tensor u = torch::zeros({2}, torch::requires_grad());
    FinetuneOptions off;
    off.schedule.lr = 0.0;
    off.grad_clip = 0.0;
    AdapterTrainer unclipped({u}, off);
    unclipped.step((u * torch::tensor({30.0f, 40.0f})).sum());
    EXPECT_NEAR(u.grad().norm().item<double>(), 50.0, 1e-4);

    EXPECT_THROW(AdapterTrainer({}, o), ConfigError);
}

TEST(AdapterTrainer, GradientsDoNotAccumulateAcrossSteps) {
    torch::Tensor w = torch::zeros({3}, torch::requires_grad());
    FinetuneOptions o;
    o.schedule.lr = 0.0;
    o.grad_clip = 0.0;
    AdapterTrainer trainer({w}, o);
    const torch::Tensor c = torch::tensor({1.0f, 2.0f, 3.0f});
    trainer.step((w * c).sum());
    trainer.step((w * c).sum());
    EXPECT_TRUE(torch::allclose(w.grad(), c));  // not 2c
}

TEST(Pretraining, FullModelLossDecreasesOnARepeatedText) {
    const BpeTokenizer& tok = tokenizer();
    ASSERT_LE(tok.vocab_size(), 320);
    std::vector<int32_t> ids32 = tok.encode(kText);
    ASSERT_GE(ids32.size(), 48u);
    std::vector<int64_t> ids64(ids32.begin(), ids32.begin() + 48);
    const torch::Tensor ids = torch::tensor(ids64, torch::kLong).reshape({2, 24});

    LlamaForCausalLM model = tiny_model(5, 320);
    model->train();
    FinetuneOptions o;
    o.schedule.lr = 3e-3;
    o.schedule.total_steps = 40;
    o.schedule.warmup_steps = 4;
    o.weight_decay = 0.0;
    AdapterTrainer trainer(model->parameters(), o);
    std::vector<double> losses;
    for (int k = 0; k < 40; ++k) {
        torch::Tensor loss = response_loss(model->forward(ids), ids);
        losses.push_back(loss.item<double>());
        trainer.step(loss);
    }
    double last5 = 0;
    for (size_t k = losses.size() - 5; k < losses.size(); ++k) last5 += losses[k] / 5.0;
    // The first loss is about log(vocab) ~ 5.8; memorising 48 tokens drives it far down.
    EXPECT_GT(losses.front(), 4.0);
    EXPECT_LT(last5, losses.front() - 2.0) << "first " << losses.front() << " last-5 mean " << last5;
    for (double l : losses) EXPECT_TRUE(std::isfinite(l));
}

TEST(AdapterTrainerState, RestoredTrainerContinuesBitIdentically) {
    auto make_params = [] {
        torch::manual_seed(4);
        return std::vector<torch::Tensor>{torch::randn({3, 5}).set_requires_grad(true),
                                          torch::randn({5}).set_requires_grad(true)};
    };
    const torch::Tensor target = torch::linspace(-1, 1, 15).reshape({3, 5});
    auto loss_of = [&](const std::vector<torch::Tensor>& p) { return ((p[0] * p[1] - target).pow(2)).sum(); };
    FinetuneOptions opt;
    opt.schedule.lr = 0.05;
    opt.schedule.total_steps = 6;
    opt.schedule.warmup_steps = 2;
    opt.weight_decay = 0.01;

    auto straight = make_params();
    AdapterTrainer a(straight, opt);
    for (int i = 0; i < 6; ++i) a.step(loss_of(straight));

    auto first = make_params();
    AdapterTrainer b(first, opt);
    for (int i = 0; i < 3; ++i) b.step(loss_of(first));
    const auto saved = b.state();
    EXPECT_EQ(saved.at("step").item<int64_t>(), 3);
    EXPECT_EQ(saved.count("exp_avg/0") + saved.count("exp_avg_sq/1") + saved.count("adam_step/1"), 3u);

    // A fresh trainer over copies of the parameters, given the saved state, takes the same steps.
    std::vector<torch::Tensor> resumed;
    for (const auto& p : first) resumed.push_back(p.detach().clone().set_requires_grad(true));
    AdapterTrainer c(resumed, opt);
    c.load_state(saved);
    for (int i = 0; i < 3; ++i) c.step(loss_of(resumed));
    EXPECT_TRUE(torch::equal(straight[0], resumed[0]));
    EXPECT_TRUE(torch::equal(straight[1], resumed[1]));
    EXPECT_EQ(c.global_step(), 6);

    // Without the moments it would not be the same run.
    std::vector<torch::Tensor> fresh;
    for (const auto& p : first) fresh.push_back(p.detach().clone().set_requires_grad(true));
    AdapterTrainer d(fresh, opt);
    d.set_global_step(3);
    for (int i = 0; i < 3; ++i) d.step(loss_of(fresh));
    EXPECT_FALSE(torch::equal(straight[0], fresh[0]));

    auto bad = saved;
    bad["exp_avg/0"] = torch::zeros({2, 2});
    EXPECT_THROW(c.load_state(bad), ModelError);
    bad = saved;
    bad.erase("adam_step/0");
    EXPECT_THROW(c.load_state(bad), ModelError);
}
