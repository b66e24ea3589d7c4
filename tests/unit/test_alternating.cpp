#include <gtest/gtest.h>

#include <torch/torch.h>

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

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

// ------------------------------------------------------------------ data parallel (gradient_sync.h)

namespace {

// An in-process group, one thread per member: sum() waits for every member's contribution, then
// each member adds the contributions in member order itself, as GroupGradientSync does over MPI.
class ThreadGroup {
public:
    explicit ThreadGroup(int members) : members_(members), grads_(static_cast<size_t>(members)),
                                        scalars_(static_cast<size_t>(members)), stops_(static_cast<size_t>(members)) {}

    class Member : public GradientSync {
    public:
        Member(ThreadGroup& group, int member) : group_(group), member_(member) {}
        void sum(const std::vector<torch::Tensor>& parameters, std::vector<double>& scalars) override {
            torch::NoGradGuard no_grad;
            std::vector<torch::Tensor> mine;
            for (const auto& p : parameters) mine.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
            const auto m = static_cast<size_t>(member_);
            group_.grads_[m] = mine;
            group_.scalars_[m] = scalars;
            group_.stops_[m] = stop_next;
            group_.wait();
            stop_seen_ = false;
            for (size_t j = 0; j < parameters.size(); ++j) {
                torch::Tensor total = group_.grads_[0][j].clone();
                for (size_t r = 1; r < group_.grads_.size(); ++r) total.add_(group_.grads_[r][j]);
                parameters[j].mutable_grad() = total;
            }
            for (size_t i = 0; i < scalars.size(); ++i) {
                double total = 0;
                for (const auto& s : group_.scalars_) total += s[i];
                scalars[i] = total;
            }
            for (bool s : group_.stops_) stop_seen_ = stop_seen_ || s;
            group_.wait();  // nobody overwrites a contribution before every member has read them
        }
        bool stop_requested() const override { return stop_seen_; }
        bool stop_next = false;

    private:
        ThreadGroup& group_;
        int member_;
        bool stop_seen_ = false;
    };

private:
    void wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        const int64_t generation = generation_;
        if (++arrived_ == members_) {
            arrived_ = 0;
            ++generation_;
            changed_.notify_all();
        } else {
            changed_.wait(lock, [&] { return generation_ != generation; });
        }
    }

    int members_;
    std::vector<std::vector<torch::Tensor>> grads_;
    std::vector<std::vector<double>> scalars_;
    std::vector<bool> stops_;
    std::mutex mutex_;
    std::condition_variable changed_;
    int arrived_ = 0;
    int64_t generation_ = 0;
};

// Rows with different numbers of response tokens (1, 2, 6, 5, 3), so that a member's weight is
// its share of the response rows, not of the sequences.
Batch uneven_batch() {
    torch::manual_seed(23);
    Batch b;
    b.input_ids = torch::randint(0, 64, {5, 12}, torch::kInt64);
    b.attention_mask = torch::ones({5, 12}, torch::kInt64);
    b.labels = torch::full({5, 12}, kIgnoreIndex, torch::kInt64);
    const int64_t response[] = {1, 2, 6, 5, 3};
    for (int64_t r = 0; r < 5; ++r)
        b.labels[r].narrow(0, 12 - response[r], response[r]).copy_(b.input_ids[r].narrow(0, 12 - response[r], response[r]));
    return b;
}

// The losses of a fixed sequence of steps: joint steps (round 0), then shared + specific pairs.
std::vector<double> run_steps(Fixture& f, const Batch& b) {
    std::vector<double> losses;
    for (int s = 0; s < 2; ++s) losses.push_back(f.trainer->joint_step(b));
    for (int s = 0; s < 2; ++s) {
        torch::Tensor teacher;
        losses.push_back(f.trainer->shared_step(b, &teacher));
        losses.push_back(f.trainer->specific_step(b, teacher));
    }
    return losses;
}

std::vector<torch::Tensor> trained_state(const Fixture& f) {
    std::vector<torch::Tensor> out = f.specific();
    for (auto& t : f.shared_params()) out.push_back(t);
    return out;
}

}  // namespace

TEST(DataParallel, RowSharesAreContiguousAndCoverTheBatch) {
    const RowShare a = row_share(5, 0, 3), b = row_share(5, 1, 3), c = row_share(5, 2, 3);
    EXPECT_EQ(a.begin, 0);
    EXPECT_EQ(a.end, 2);
    EXPECT_EQ(b.begin, 2);
    EXPECT_EQ(b.end, 4);
    EXPECT_EQ(c.begin, 4);
    EXPECT_EQ(c.end, 5);
    const RowShare empty = row_share(2, 3, 4);
    EXPECT_EQ(empty.begin, empty.end);
    EXPECT_THROW(row_share(4, 2, 2), Error);
}

TEST(DataParallel, AMembersWeightIsItsShareOfTheResponseRows) {
    const Batch b = uneven_batch();  // response rows per sequence: 1, 2, 6, 5, 3 (17)
    EXPECT_EQ(count_response_rows(b.labels), 17);
    const BatchPart first = batch_part(b, 0, 2), second = batch_part(b, 1, 2);  // rows 0-2 and 3-4
    EXPECT_EQ(first.batch.input_ids.size(0), 3);
    EXPECT_EQ(second.batch.input_ids.size(0), 2);
    EXPECT_DOUBLE_EQ(first.weight, 9.0 / 17.0);
    EXPECT_DOUBLE_EQ(second.weight, 8.0 / 17.0);
    EXPECT_TRUE(torch::equal(second.batch.labels, b.labels.slice(0, 3, 5)));
    const BatchPart alone = batch_part(b, 0, 1);
    EXPECT_DOUBLE_EQ(alone.weight, 1.0);
    EXPECT_TRUE(torch::equal(alone.batch.input_ids, b.input_ids));
    const BatchPart none = batch_part(b, 5, 6);  // six members, five sequences
    EXPECT_TRUE(none.empty);
    EXPECT_DOUBLE_EQ(none.weight, 0.0);
}

class DataParallelGroup : public ::testing::TestWithParam<int> {
protected:
    // `members` replicas of the fixture stepping together in threads; each runs `steps` on the
    // batch and returns its losses. Six members on five sequences: one member has no row at all.
    std::vector<std::vector<double>> run_group(int members,
                                               const std::function<std::vector<double>(Fixture&)>& steps) {
        group = std::make_unique<ThreadGroup>(members);
        for (int m = 0; m < members; ++m) {
            replicas.push_back(std::make_unique<Fixture>());
            syncs.push_back(std::make_unique<ThreadGroup::Member>(*group, m));
            replicas.back()->trainer->set_data_parallel(syncs.back().get(), m, members);
        }
        std::vector<std::vector<double>> losses(static_cast<size_t>(members));
        std::vector<std::thread> threads;
        for (int m = 0; m < members; ++m)
            threads.emplace_back([&, m] { losses[static_cast<size_t>(m)] = steps(*replicas[static_cast<size_t>(m)]); });
        for (auto& t : threads) t.join();
        return losses;
    }
    std::unique_ptr<ThreadGroup> group;
    std::vector<std::unique_ptr<Fixture>> replicas;
    std::vector<std::unique_ptr<ThreadGroup::Member>> syncs;
};

// max |a - b| over max |b|.
double relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
    return (a - b).abs().max().item<double>() / std::max(b.abs().max().item<double>(), 1e-30);
}

TEST_P(DataParallelGroup, MembersSumTheGradientOfTheWholeBatch) {
    // After one joint step every member holds the gradient of the whole batch's mean loss (the
    // single trainer's) up to float rounding: weights by sequences instead of response rows, or a
    // missing member, would be off by percents.
    const Batch b = uneven_batch();
    Fixture alone;
    alone.trainer->joint_step(b);
    run_group(GetParam(), [&](Fixture& f) { return std::vector<double>{f.trainer->joint_step(b)}; });
    const auto expected = alone.adapted.adapter_parameters();
    for (const auto& replica : replicas) {
        const auto got = replica->adapted.adapter_parameters();
        for (size_t i = 0; i < expected.size(); ++i)
            EXPECT_LE(relative_difference(got[i].grad(), expected[i].grad()), 2e-6) << "adapter tensor " << i;
        EXPECT_LE(relative_difference(replica->shared->residual().grad(), alone.shared->residual().grad()), 2e-6);
        EXPECT_LE(relative_difference(replica->shared->relation_logits().grad(), alone.shared->relation_logits().grad()), 2e-6);
    }
}

TEST_P(DataParallelGroup, MembersFollowTheTrainerAloneOverJointSharedAndSpecificSteps) {
    // Six steps of every kind: the group's losses are the single trainer's within float rounding
    // and the replicas stay bit-identical to each other. The parameters agree to 5e-5 of each
    // tensor's largest value: AdamW divides by the root of the second moment, which magnifies the
    // rounding of gradient entries near zero (the gradients themselves agree to 1e-6, above).
    const Batch b = uneven_batch();
    Fixture alone;
    const std::vector<double> expected = run_steps(alone, b);
    const auto losses = run_group(GetParam(), [&](Fixture& f) { return run_steps(f, b); });
    for (size_t m = 0; m < losses.size(); ++m) {
        ASSERT_EQ(losses[m].size(), expected.size());
        for (size_t s = 0; s < expected.size(); ++s)
            EXPECT_NEAR(losses[m][s], expected[s], 2e-6 * std::abs(expected[s])) << "member " << m << " step " << s;
    }
    const auto reference = trained_state(alone);
    const auto first = trained_state(*replicas[0]);
    for (size_t i = 0; i < reference.size(); ++i) EXPECT_LE(relative_difference(first[i], reference[i]), 5e-5) << "tensor " << i;
    for (size_t m = 1; m < replicas.size(); ++m) EXPECT_TRUE(all_equal(trained_state(*replicas[m]), first)) << "member " << m;
    // What the members trained is what the trainer alone trained, not the initial state.
    EXPECT_TRUE(all_differ(first, trained_state(Fixture())));
}

INSTANTIATE_TEST_SUITE_P(Members, DataParallelGroup, ::testing::Values(2, 3, 6));

TEST(DataParallel, AStopRequestedByOneMemberReachesEveryMember) {
    const Batch b = uneven_batch();
    ThreadGroup group(2);
    Fixture f0, f1;
    ThreadGroup::Member s0(group, 0), s1(group, 1);
    f0.trainer->set_data_parallel(&s0, 0, 2);
    f1.trainer->set_data_parallel(&s1, 1, 2);
    s1.stop_next = true;
    std::thread other([&] { f1.trainer->joint_step(b); });
    f0.trainer->joint_step(b);
    other.join();
    EXPECT_TRUE(s0.stop_requested());
    EXPECT_TRUE(s1.stop_requested());
}
