#include <gtest/gtest.h>

#include <torch/torch.h>

#include <algorithm>
#include <memory>

#include "h2tune/core/error.h"
#include "h2tune/method/shared_middle.h"
#include "h2tune/model/llama.h"
#include "h2tune/train/alternating.h"

using namespace h2tune;

namespace {

LlamaConfig tiny_config() {
    LlamaConfig c;
    c.vocab_size = 64;
    c.hidden_size = 64;
    c.intermediate_size = 96;
    c.num_hidden_layers = 3;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.max_position_embeddings = 64;
    return c;
}

Batch make_batch() {
    torch::manual_seed(21);
    Batch b;
    b.input_ids = torch::randint(0, 64, {4, 12}, torch::kInt64);
    b.attention_mask = torch::ones({4, 12}, torch::kInt64);
    b.labels = torch::full({4, 12}, kIgnoreIndex, torch::kInt64);
    b.labels.narrow(1, 8, 4).copy_(b.input_ids.narrow(1, 8, 4));  // the "response"
    return b;
}

struct Fixture {
    AdaptedModel adapted;
    std::unique_ptr<SharedMiddle> shared;
    std::unique_ptr<AlternatingTrainer> trainer;

    explicit Fixture(const std::string& align = "relation", bool track_taylor = false) {
        torch::manual_seed(3);
        LlamaForCausalLM model(tiny_config());
        const std::vector<std::string> modules = {"q", "v", "down"};
        adapted = attach_adapters(model, modules, 2, 4.0, 77);
        SharedMiddleOptions so;
        so.global_layers = 4;
        so.layers = 3;
        so.modules = 3;
        so.rank = 2;
        so.max_rank = 4;
        so.align = align;
        so.mask_key = 5;
        so.track_taylor = track_taylor;
        shared = std::make_unique<SharedMiddle>(so);
        shared->begin_round(torch::randn({4, 3, 4}));
        std::vector<int64_t> module_index;
        for (const auto& t : adapted.module_types)
            module_index.push_back(static_cast<int64_t>(std::find(modules.begin(), modules.end(), t) - modules.begin()));
        AlternatingOptions opt;
        opt.specific.schedule.lr = opt.residual.schedule.lr = opt.relation.schedule.lr = 1e-2;
        opt.specific.schedule.total_steps = opt.residual.schedule.total_steps = opt.relation.schedule.total_steps = 10;
        trainer = std::make_unique<AlternatingTrainer>(adapted, shared.get(), module_index, opt);
        // Non-zero B so that T influences the output (fresh LoRA has B = 0).
        torch::NoGradGuard no_grad;
        for (auto& a : adapted.adapters) a->lora_B.normal_(0, 0.05);
    }

    std::vector<torch::Tensor> specific() const {
        std::vector<torch::Tensor> out;
        for (const auto& p : adapted.adapter_parameters()) out.push_back(p.detach().clone());
        return out;
    }
    std::vector<torch::Tensor> shared_params() const {
        return {shared->residual().detach().clone(), shared->relation_logits().detach().clone()};
    }
};

bool all_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
    for (size_t i = 0; i < a.size(); ++i)
        if (!torch::equal(a[i], b[i])) return false;
    return true;
}

bool all_differ(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
    for (size_t i = 0; i < a.size(); ++i)
        if (torch::equal(a[i], b[i])) return false;
    return true;
}

}  // namespace

TEST(Alternating, SharedStepMovesOnlyDAndZ) {
    Fixture f;
    auto p0 = f.specific(), s0 = f.shared_params();
    torch::Tensor teacher;
    f.trainer->shared_step(make_batch(), &teacher);
    EXPECT_TRUE(all_equal(p0, f.specific()));   // A and B bit-identical
    EXPECT_TRUE(all_differ(s0, f.shared_params()));  // D and Z both moved
    EXPECT_EQ(teacher.sizes(), (std::vector<int64_t>{4 * 4, 64}));  // logits at the 16 response rows
    EXPECT_FALSE(teacher.requires_grad());
    // The adapter parameters are trainable again afterwards.
    for (const auto& p : f.adapted.adapter_parameters()) EXPECT_TRUE(p.requires_grad());
}

TEST(Alternating, SpecificStepMovesOnlyAAndB) {
    Fixture f;
    torch::Tensor teacher;
    f.trainer->shared_step(make_batch(), &teacher);
    auto p0 = f.specific(), s0 = f.shared_params();
    f.trainer->specific_step(make_batch(), teacher);
    EXPECT_TRUE(all_equal(s0, f.shared_params()));  // D and Z bit-identical
    EXPECT_FALSE(all_equal(p0, f.specific()));
}

TEST(Alternating, JointStepMovesEverythingAndTheRelationGetsTaskGradients) {
    Fixture f;
    auto p0 = f.specific(), s0 = f.shared_params();
    f.trainer->joint_step(make_batch());
    EXPECT_FALSE(all_equal(p0, f.specific()));
    EXPECT_TRUE(all_differ(s0, f.shared_params()));
    ASSERT_TRUE(f.shared->relation_logits().grad().defined());
    EXPECT_GT(f.shared->relation_logits().grad().abs().sum().item<double>(), 0.0);
}

TEST(Alternating, TaylorStatisticsAreTheProductOfTAndItsGradientWhenTracked) {
    Fixture untracked;
    untracked.trainer->joint_step(make_batch());
    EXPECT_TRUE(untracked.shared->taylor().empty());

    Fixture f("relation", true);
    const torch::Tensor values = f.shared->middle_values().detach().clone();
    torch::Tensor teacher;
    f.trainer->shared_step(make_batch(), &teacher);
    ASSERT_EQ(f.shared->taylor().steps(), 1);
    // First step: exactly sum_l |T * dL/dT| with dL/dT = the gradient D received.
    const torch::Tensor grad = f.shared->residual().grad();
    EXPECT_TRUE(torch::allclose(f.shared->taylor().scores(), (values * grad).abs().sum(0)));
    EXPECT_TRUE(torch::allclose(f.shared->taylor().grad_scale(), grad.abs().mean(std::vector<int64_t>{0, 2})));
    EXPECT_GT(f.shared->taylor().scores().sum().item<double>(), 0.0);
    // The specific step leaves T fixed and adds nothing.
    f.trainer->specific_step(make_batch(), teacher);
    EXPECT_EQ(f.shared->taylor().steps(), 1);
    // A new mask means new positions: the statistics restart.
    torch::Tensor masks = f.shared->masks().clone();
    masks[0] = torch::tensor(std::vector<int64_t>{0, 5, 10, 15});
    f.shared->set_masks(masks);
    EXPECT_TRUE(f.shared->taylor().empty());
    EXPECT_TRUE(torch::equal(f.shared->masks(), masks));
}

TEST(Alternating, NewMasksAreValidated) {
    Fixture f;
    const torch::Tensor good = f.shared->masks().clone();
    torch::Tensor out_of_range = good.clone(), unordered = good.clone();
    out_of_range[1][3] = 16;  // R*R = 16
    unordered[2] = torch::tensor(std::vector<int64_t>{3, 1, 7, 9});
    EXPECT_THROW(f.shared->set_masks(out_of_range), CommError);
    EXPECT_THROW(f.shared->set_masks(unordered), CommError);
    EXPECT_THROW(f.shared->set_masks(good.narrow(0, 0, 2)), CommError);
    EXPECT_TRUE(torch::equal(f.shared->masks(), good));  // a rejected mask changes nothing
}

TEST(Alternating, DepthAlignmentKeepsTheRelationFixed) {
    Fixture f("depth");
    torch::Tensor z0 = f.shared->relation_logits().detach().clone();
    f.trainer->joint_step(make_batch());
    EXPECT_TRUE(torch::equal(z0, f.shared->relation_logits()));
}

TEST(Alternating, MiddleMatricesComeFromTheMaskedMixture) {
    Fixture f;
    torch::Tensor values = f.shared->middle_values().detach();
    // D starts at zero, so T is exactly the relation mix of the received slices.
    EXPECT_TRUE(torch::allclose(values, f.shared->downloaded_values()));
    f.trainer->set_middles(values);
    for (size_t i = 0; i < f.adapted.adapters.size(); ++i) {
        const int64_t layer = f.adapted.layers[i];
        EXPECT_EQ(f.adapted.adapters[i]->middle().sizes(), (std::vector<int64_t>{2, 2}));
        EXPECT_TRUE(torch::allclose(f.adapted.adapters[i]->middle().reshape({-1}),
                                    values[layer].select(0, i % 3)));
    }
}

TEST(Alternating, DistillationIsZeroForIdenticalLogitsAndPositiveOtherwise) {
    torch::manual_seed(4);
    Batch b = make_batch();
    torch::Tensor z = torch::randn({4, 12, 64});
    EXPECT_NEAR(distillation_kl(z, z, b.labels, 2.0).item<double>(), 0.0, 1e-7);
    EXPECT_GT(distillation_kl(z, torch::randn({4, 12, 64}), b.labels, 2.0).item<double>(), 0.0);
    // Only response positions count: changing the student elsewhere changes nothing.
    torch::Tensor s = torch::randn({4, 12, 64});
    torch::Tensor s2 = s.clone();
    s2.narrow(1, 0, 6).normal_();
    EXPECT_NEAR(distillation_kl(z, s, b.labels, 2.0).item<double>(), distillation_kl(z, s2, b.labels, 2.0).item<double>(),
                1e-6);
}

TEST(Alternating, DistillationOnResponseRowsEqualsTheFullLogitsVersion) {
    torch::manual_seed(6);
    Batch b = make_batch();
    b.labels[2].narrow(0, 8, 4).fill_(kIgnoreIndex);  // a row without response
    b.labels[1][3] = b.input_ids[1][3];                // and a label outside the response block
    const torch::Tensor t = torch::randn({4, 12, 64}), s = torch::randn({4, 12, 64});
    const ResponseRows rows = response_rows(b.labels);
    EXPECT_EQ(rows.rows.numel(), 13);  // one position before each kept label
    const double full = distillation_kl(t, s, b.labels, 2.0).item<double>();
    const double on_rows = distillation_kl_rows(gather_rows(t, rows), gather_rows(s, rows), 2.0).item<double>();
    EXPECT_NEAR(on_rows, full, 1e-6 * std::abs(full));
    // The positions distillation_kl reads: the same as response_loss's (labels shifted by one).
    torch::Tensor keep = torch::zeros({4 * 12}, torch::kBool);
    keep.index_fill_(0, rows.rows, true);
    EXPECT_TRUE(torch::equal(keep.reshape({4, 12}).narrow(1, 0, 11), b.labels.narrow(1, 1, 11).ne(kIgnoreIndex)));
}

TEST(Alternating, StepsComputeTheSameLossesAsTheFullLogitsFormulas) {
    // joint, shared and specific steps return the CE of the response rows; it equals response_loss
    // on the full logits of the model the step started from.
    Fixture f;
    const Batch b = make_batch();
    double expected;
    {
        torch::NoGradGuard no_grad;
        f.trainer->fix_middles();
        expected = response_loss(f.adapted.model->forward(b.input_ids, b.attention_mask), b.labels).item<double>();
    }
    torch::Tensor teacher;
    const double shared_ce = f.trainer->shared_step(b, &teacher);
    EXPECT_NEAR(shared_ce, expected, 1e-6 * std::abs(expected));
    EXPECT_EQ(teacher.sizes(), (std::vector<int64_t>{4 * 4, 64}));  // [response rows, vocab]
    double expected_specific;
    {
        torch::NoGradGuard no_grad;
        f.trainer->fix_middles();
        expected_specific = response_loss(f.adapted.model->forward(b.input_ids, b.attention_mask), b.labels).item<double>();
    }
    EXPECT_NEAR(f.trainer->specific_step(b, teacher), expected_specific, 1e-6 * std::abs(expected_specific));
}

TEST(Alternating, ProximalTermIsZeroAtTheDownloadedValues) {
    Fixture f;
    EXPECT_NEAR(f.shared->proximal_kl(f.shared->downloaded_values()).item<double>(), 0.0, 1e-7);
    EXPECT_GT(f.shared->proximal_kl(f.shared->downloaded_values() + torch::randn({3, 3, 4})).item<double>(), 0.0);
}
