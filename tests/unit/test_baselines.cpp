#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "h2tune/core/error.h"
#include "h2tune/method/baselines.h"

using namespace h2tune;

namespace {

torch::Tensor mat(std::vector<std::vector<double>> rows, torch::Dtype dtype = torch::kFloat64) {
    std::vector<double> flat;
    for (auto& row : rows) flat.insert(flat.end(), row.begin(), row.end());
    return torch::tensor(flat, torch::kFloat64)
        .reshape({static_cast<int64_t>(rows.size()), -1})
        .to(dtype);
}

LoraFactors factors(torch::Tensor A, torch::Tensor B, double samples, double scale = 1.0, int client = -1) {
    LoraFactors f;
    f.A = std::move(A);
    f.B = std::move(B);
    f.samples = samples;
    f.scale = scale;
    f.client = client;
    return f;
}

// Random factors (B non-zero, unlike a fresh LoRA, so every rule has something to do).
LoraFactors random_factors(int64_t rank, int64_t d_in, int64_t d_out, double samples, double alpha = 8.0,
                           torch::Dtype dtype = torch::kFloat64, int client = -1) {
    return factors(torch::randn({rank, d_in}, dtype), torch::randn({d_out, rank}, dtype), samples,
                   alpha / static_cast<double>(rank), client);
}

// sum_k p_k s_k B_k A_k, computed here in float64 independently of the library.
torch::Tensor expected_average_update(const std::vector<LoraFactors>& clients) {
    double total = 0;
    for (const auto& f : clients) total += f.samples;
    torch::Tensor acc = torch::zeros({clients[0].B.size(0), clients[0].A.size(1)}, torch::kFloat64);
    for (const auto& f : clients)
        acc = acc + (f.samples / total) * f.scale * torch::mm(f.B.to(torch::kFloat64), f.A.to(torch::kFloat64));
    return acc;
}

// A group valid for every rule: equal ranks and one shared frozen A (FFA's premise).
std::vector<LoraFactors> uniform_group(torch::Dtype dtype = torch::kFloat64) {
    torch::manual_seed(7);
    const torch::Tensor shared_A = torch::randn({2, 5}, dtype);
    std::vector<LoraFactors> group;
    for (int k = 0; k < 3; ++k)
        group.push_back(factors(shared_A.clone(), torch::randn({4, 2}, dtype), 10.0 * (k + 1), 4.0, k));
    return group;
}

using Rule = std::function<void(const std::vector<LoraFactors>&)>;

std::vector<std::pair<std::string, Rule>> every_rule() {
    return {
        {"fedit", [](const std::vector<LoraFactors>& g) { aggregate_fedit(g); }},
        {"ffa", [](const std::vector<LoraFactors>& g) { aggregate_ffa(g); }},
        {"fedsa", [](const std::vector<LoraFactors>& g) { aggregate_fedsa(g); }},
        {"hetlora", [](const std::vector<LoraFactors>& g) { aggregate_hetlora(g); }},
        {"hetlora", [](const std::vector<LoraFactors>& g) { hetlora_weights(g); }},
        {"flexlora", [](const std::vector<LoraFactors>& g) { aggregate_flexlora(g); }},
        {"flora", [](const std::vector<LoraFactors>& g) { flora_stack(g); }},
        {"flora", [](const std::vector<LoraFactors>& g) { flora_merged_update(g); }},
        {"average_update", [](const std::vector<LoraFactors>& g) { average_update(g); }},
    };
}

// Every rule throws ModelError for `group`, with its own name and `needle` in the message.
void expect_every_rule_rejects(const std::vector<LoraFactors>& group, const std::string& needle) {
    for (const auto& [name, rule] : every_rule()) {
        try {
            rule(group);
            ADD_FAILURE() << name << " accepted a group with " << needle;
        } catch (const ModelError& e) {
            const std::string what = e.what();
            EXPECT_NE(what.find(name), std::string::npos) << what;
            EXPECT_NE(what.find(needle), std::string::npos) << what;
        }
    }
}

}  // namespace

// ---------------------------------------------------------------- weights and norms

TEST(ClientWeights, AreSampleCountsOverTheirSum) {
    const std::vector<double> p = client_weights({1, 3, 4});
    ASSERT_EQ(p.size(), 3u);
    EXPECT_DOUBLE_EQ(p[0], 0.125);
    EXPECT_DOUBLE_EQ(p[1], 0.375);
    EXPECT_DOUBLE_EQ(p[2], 0.5);
}

TEST(ClientWeights, RejectEmptyNonPositiveAndNonFiniteCounts) {
    EXPECT_THROW(client_weights({}), ModelError);
    EXPECT_THROW(client_weights({1, 0}), ModelError);
    EXPECT_THROW(client_weights({-2, 3}), ModelError);
    EXPECT_THROW(client_weights({1, std::numeric_limits<double>::quiet_NaN()}), ModelError);
    EXPECT_THROW(client_weights({1, std::numeric_limits<double>::infinity()}), ModelError);
}

TEST(LoraProductNorm, EqualsTheFrobeniusNormOfTheFormedProduct) {
    // Hand example: B A = [[2, 0], [4, 0]], norm sqrt(20).
    EXPECT_NEAR(lora_product_norm(mat({{1, 0}}), mat({{2}, {4}})), std::sqrt(20.0), 1e-14);
    torch::manual_seed(3);
    for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
        const torch::Tensor A = torch::randn({3, 9}, dtype), B = torch::randn({6, 3}, dtype);
        const double formed = torch::mm(B.to(torch::kFloat64), A.to(torch::kFloat64)).norm().item<double>();
        EXPECT_NEAR(lora_product_norm(A, B), formed, 1e-12 * formed) << dtype;
    }
    EXPECT_EQ(lora_product_norm(torch::randn({2, 5}), torch::zeros({4, 2})), 0.0);
}

TEST(LoraProductNorm, RejectsFactorsWhoseRanksDisagree) {
    EXPECT_THROW(lora_product_norm(torch::randn({2, 5}), torch::randn({4, 3})), ModelError);
    EXPECT_THROW(lora_product_norm(torch::randn({2, 5}), torch::randn({4})), ModelError);
}

TEST(LoraUpdate, IsTheScaleTimesBTimesA) {
    const torch::Tensor dw = lora_update(factors(mat({{1, 2}}), mat({{3}, {-1}}), 1, 0.5));
    EXPECT_TRUE(torch::equal(dw, mat({{1.5, 3}, {-0.5, -1}}))) << dw;
    EXPECT_THROW(lora_update(factors(mat({{1, 2}}), mat({{3}, {-1}}), 1, -0.5)), ModelError);
}

// ---------------------------------------------------------------- FedIT, FFA, FedSA

TEST(FedIT, AveragesAAndBWithSampleWeights) {
    // n = 1 and 3: p = 1/4, 3/4.
    const std::vector<LoraFactors> group = {factors(mat({{1, 2}}), mat({{4}, {8}}), 1, 2.0, 0),
                                            factors(mat({{3, 4}}), mat({{0}, {-4}}), 3, 2.0, 1)};
    const auto out = aggregate_fedit(group);
    ASSERT_EQ(out.size(), 2u);
    for (const auto& f : out) {
        EXPECT_TRUE(torch::allclose(f.A, mat({{2.5, 3.5}}), 0, 1e-15)) << f.A;
        EXPECT_TRUE(torch::allclose(f.B, mat({{1}, {-1}}), 0, 1e-15)) << f.B;
    }
    EXPECT_EQ(out[1].client, 1);
    EXPECT_EQ(out[1].samples, 3);
    EXPECT_EQ(out[1].scale, 2.0);
}

TEST(FedIT, RejectsMismatchedRanks) {
    torch::manual_seed(1);
    const std::vector<LoraFactors> group = {random_factors(2, 5, 4, 1, 8, torch::kFloat64, 0),
                                            random_factors(3, 5, 4, 1, 8, torch::kFloat64, 1)};
    try {
        aggregate_fedit(group);
        FAIL() << "accepted ranks 2 and 3";
    } catch (const ModelError& e) {
        EXPECT_NE(std::string(e.what()).find("client 1 has rank 3"), std::string::npos) << e.what();
    }
    EXPECT_THROW(aggregate_ffa(group), ModelError);
    EXPECT_THROW(aggregate_fedsa(group), ModelError);
}

TEST(FFA, KeepsABitIdenticalAndAveragesB) {
    auto group = uniform_group(torch::kFloat32);
    const auto out = aggregate_ffa(group);
    const torch::Tensor mean_B = (group[0].B.to(torch::kFloat64) * 10 + group[1].B.to(torch::kFloat64) * 20 +
                                  group[2].B.to(torch::kFloat64) * 30) / 60;
    for (size_t k = 0; k < group.size(); ++k) {
        EXPECT_TRUE(torch::equal(out[k].A, group[k].A)) << k;
        EXPECT_TRUE(torch::allclose(out[k].B.to(torch::kFloat64), mean_B, 1e-6, 1e-6)) << k;
    }
}

TEST(FFA, RejectsClientsWhoseFrozenADiffers) {
    auto group = uniform_group();
    group[2].A = group[2].A.clone();
    group[2].A[1][3].add_(1e-12);
    try {
        aggregate_ffa(group);
        FAIL() << "accepted a different A";
    } catch (const ModelError& e) {
        EXPECT_NE(std::string(e.what()).find("client 2 holds a different frozen A"), std::string::npos) << e.what();
    }
}

TEST(FedSA, NeverMovesBAndAveragesA) {
    torch::manual_seed(5);
    const std::vector<LoraFactors> group = {random_factors(3, 6, 5, 2), random_factors(3, 6, 5, 6)};
    const auto out = aggregate_fedsa(group);
    const torch::Tensor mean_A = 0.25 * group[0].A + 0.75 * group[1].A;
    for (size_t k = 0; k < group.size(); ++k) {
        EXPECT_TRUE(torch::equal(out[k].B, group[k].B)) << k;
        EXPECT_TRUE(torch::allclose(out[k].A, mean_A, 1e-14, 1e-14)) << k;
    }
}

// ---------------------------------------------------------------- HetLoRA

TEST(HetLoRA, PaddingAppendsZerosAndKeepsTheProduct) {
    torch::manual_seed(2);
    const LoraFactors f = random_factors(2, 5, 3, 1);
    const LoraFactors padded = pad_to_rank(f, 4);
    ASSERT_EQ(padded.A.sizes(), (std::vector<int64_t>{4, 5}));
    ASSERT_EQ(padded.B.sizes(), (std::vector<int64_t>{3, 4}));
    EXPECT_TRUE(torch::equal(padded.A.narrow(0, 0, 2), f.A));
    EXPECT_TRUE(torch::equal(padded.B.narrow(1, 0, 2), f.B));
    EXPECT_TRUE(torch::equal(padded.A.narrow(0, 2, 2), torch::zeros({2, 5}, torch::kFloat64)));
    EXPECT_TRUE(torch::equal(padded.B.narrow(1, 2, 2), torch::zeros({3, 2}, torch::kFloat64)));
    EXPECT_TRUE(torch::equal(torch::mm(padded.B, padded.A), torch::mm(f.B, f.A)));
    EXPECT_TRUE(torch::equal(pad_to_rank(f, 2).A, f.A));
    EXPECT_THROW(pad_to_rank(f, 1), ModelError);
}

TEST(HetLoRA, TruncationKeepsTheLeadingRowsOfAAndColumnsOfB) {
    const LoraFactors f = factors(mat({{1, 2}, {3, 4}, {5, 6}}), mat({{7, 8, 9}}), 1);
    const LoraFactors t = truncate_to_rank(f, 2);
    EXPECT_TRUE(torch::equal(t.A, mat({{1, 2}, {3, 4}})));
    EXPECT_TRUE(torch::equal(t.B, mat({{7, 8}})));
    EXPECT_THROW(truncate_to_rank(f, 4), ModelError);
    EXPECT_THROW(truncate_to_rank(f, 0), ModelError);
}

TEST(HetLoRA, WeightsBySampleShareTimesUpdateNormInAHandComputedExample) {
    // Client 0: rank 1, B A = [[2, 0]], norm 2, n = 1 (p = 1/4).
    // Client 1: rank 2, B A = [[0, 3]], norm 3, n = 3 (p = 3/4).
    // w ~ (1/4 * 2, 3/4 * 3) = (0.5, 2.25) -> (2/11, 9/11).
    const std::vector<LoraFactors> group = {factors(mat({{1, 0}}), mat({{2}}), 1, 8.0),
                                            factors(mat({{0, 3}, {1, 1}}), mat({{1, 0}}), 3, 4.0)};
    const std::vector<double> w = hetlora_weights(group);
    ASSERT_EQ(w.size(), 2u);
    EXPECT_NEAR(w[0], 2.0 / 11, 1e-15);
    EXPECT_NEAR(w[1], 9.0 / 11, 1e-15);

    // Padded: A_0 = [[1, 0], [0, 0]], B_0 = [[2, 0]]. Average:
    // A = 2/11 [[1, 0], [0, 0]] + 9/11 [[0, 3], [1, 1]] = [[2, 27], [9, 9]] / 11, B = [[13, 0]] / 11.
    const auto out = aggregate_hetlora(group);
    ASSERT_EQ(out.size(), 2u);
    EXPECT_TRUE(torch::allclose(out[1].A, mat({{2, 27}, {9, 9}}) / 11, 1e-14, 1e-15)) << out[1].A;
    EXPECT_TRUE(torch::allclose(out[1].B, mat({{13, 0}}) / 11, 1e-14, 1e-15)) << out[1].B;
    // Client 0 is truncated back to rank 1.
    EXPECT_TRUE(torch::allclose(out[0].A, mat({{2, 27}}) / 11, 1e-14, 1e-15)) << out[0].A;
    EXPECT_TRUE(torch::allclose(out[0].B, mat({{13}}) / 11, 1e-14, 1e-15)) << out[0].B;
    EXPECT_EQ(out[0].scale, 8.0);
    EXPECT_EQ(out[1].scale, 4.0);
}

TEST(HetLoRA, FallsBackToSampleWeightsWhenEveryUpdateIsZero) {
    // Round one of LoRA: B = 0 everywhere, so every norm is 0.
    const std::vector<LoraFactors> group = {factors(mat({{4, 8}}), mat({{0}, {0}}), 1),
                                            factors(mat({{0, 4}, {8, 0}}), mat({{0, 0}, {0, 0}}), 3)};
    const std::vector<double> w = hetlora_weights(group);
    EXPECT_DOUBLE_EQ(w[0], 0.25);
    EXPECT_DOUBLE_EQ(w[1], 0.75);
    const auto out = aggregate_hetlora(group);
    EXPECT_TRUE(torch::allclose(out[1].A, mat({{1, 5}, {6, 0}}), 1e-14, 1e-15)) << out[1].A;
    EXPECT_TRUE(torch::allclose(out[0].A, mat({{1, 5}}), 1e-14, 1e-15)) << out[0].A;
}

TEST(HetLoRA, GivesAZeroUpdateClientNoWeightWhenOthersLearned) {
    const std::vector<LoraFactors> group = {factors(mat({{1, 1}}), mat({{0}}), 100),
                                            factors(mat({{2, 4}}), mat({{3}}), 1)};
    const std::vector<double> w = hetlora_weights(group);
    EXPECT_EQ(w[0], 0.0);
    EXPECT_EQ(w[1], 1.0);
}

// ---------------------------------------------------------------- FlexLoRA

TEST(FlexLoRA, ReturnsTheBestRankRApproximationInEachClientsOwnScale) {
    torch::manual_seed(11);
    const int64_t d_in = 6, d_out = 7;
    const std::vector<LoraFactors> group = {random_factors(1, d_in, d_out, 5), random_factors(2, d_in, d_out, 1),
                                            random_factors(3, d_in, d_out, 2), random_factors(4, d_in, d_out, 3)};
    const torch::Tensor dw = expected_average_update(group);
    // Independent reference: the older torch::svd (V, not V^T).
    const auto svd = torch::svd(dw);
    const torch::Tensor U = std::get<0>(svd), S = std::get<1>(svd), V = std::get<2>(svd);
    ASSERT_GT(S[4].item<double>(), 1e-6);  // rank(dW) > every r_k here, so every client truncates

    const auto out = aggregate_flexlora(group);
    ASSERT_EQ(out.size(), group.size());
    for (size_t k = 0; k < group.size(); ++k) {
        const int64_t r = group[k].rank();
        ASSERT_EQ(out[k].A.sizes(), (std::vector<int64_t>{r, d_in})) << k;
        ASSERT_EQ(out[k].B.sizes(), (std::vector<int64_t>{d_out, r})) << k;
        EXPECT_EQ(out[k].scale, group[k].scale);
        const torch::Tensor product = out[k].scale * torch::mm(out[k].B, out[k].A);
        const torch::Tensor best = torch::mm(U.narrow(1, 0, r) * S.narrow(0, 0, r), V.narrow(1, 0, r).t());
        EXPECT_TRUE(torch::allclose(product, best, 1e-10, 1e-10)) << k;
        // Eckart-Young: the residual is exactly the discarded part of the spectrum.
        const double residual = (dw - product).norm().item<double>();
        const double discarded = S.narrow(0, r, S.size(0) - r).pow(2).sum().sqrt().item<double>();
        EXPECT_NEAR(residual, discarded, 1e-10) << k;
    }
}

TEST(FlexLoRA, ReproducesTheAverageWhenTheRankSuffices) {
    // d_in = 3 bounds rank(dW) by 3: clients of rank 3 and 5 get dW back exactly, rank 5 with two
    // zero directions; the rank-1 client gets the leading direction only.
    torch::manual_seed(13);
    const std::vector<LoraFactors> group = {random_factors(1, 3, 5, 1), random_factors(3, 3, 5, 1),
                                            random_factors(5, 3, 5, 2)};
    const torch::Tensor dw = expected_average_update(group);
    const auto out = aggregate_flexlora(group);
    for (size_t k : {1u, 2u})
        EXPECT_TRUE(torch::allclose(out[k].scale * torch::mm(out[k].B, out[k].A), dw, 1e-10, 1e-10)) << k;
    ASSERT_EQ(out[2].A.sizes(), (std::vector<int64_t>{5, 3}));
    EXPECT_TRUE(torch::equal(out[2].A.narrow(0, 3, 2), torch::zeros({2, 3}, torch::kFloat64)));
    EXPECT_TRUE(torch::equal(out[2].B.narrow(1, 3, 2), torch::zeros({5, 2}, torch::kFloat64)));
    EXPECT_FALSE(torch::allclose(out[0].scale * torch::mm(out[0].B, out[0].A), dw, 1e-3, 1e-3));
}

TEST(FlexLoRA, SplitsSingularValuesAndScaleEvenlyBetweenTheFactors) {
    // B' = U_r sqrt(S_r) / sqrt(s), A' = sqrt(S_r) V_r^T / sqrt(s): both Gram matrices are S_r / s.
    torch::manual_seed(17);
    const std::vector<LoraFactors> group = {random_factors(2, 6, 4, 1, 16.0), random_factors(3, 6, 4, 1, 16.0)};
    const torch::Tensor S = torch::linalg_svdvals(expected_average_update(group));
    const auto out = aggregate_flexlora(group);
    for (size_t k = 0; k < out.size(); ++k) {
        const int64_t r = out[k].rank();
        const torch::Tensor expected = torch::diag(S.narrow(0, 0, r)) / out[k].scale;
        EXPECT_TRUE(torch::allclose(torch::mm(out[k].B.t(), out[k].B), expected, 1e-10, 1e-10)) << k;
        EXPECT_TRUE(torch::allclose(torch::mm(out[k].A, out[k].A.t()), expected, 1e-10, 1e-10)) << k;
    }
}

// ---------------------------------------------------------------- FLoRA

TEST(FLoRA, StackingReproducesTheWeightedSumOfUpdatesExactly) {
    torch::manual_seed(19);
    for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
        const std::vector<LoraFactors> group = {random_factors(2, 9, 7, 3, 16.0, dtype),
                                                random_factors(3, 9, 7, 1, 16.0, dtype),
                                                random_factors(1, 9, 7, 4, 16.0, dtype)};
        const torch::Tensor expected = expected_average_update(group);
        const FloraStack stack = flora_stack(group);
        ASSERT_EQ(stack.A.sizes(), (std::vector<int64_t>{6, 9}));
        ASSERT_EQ(stack.B.sizes(), (std::vector<int64_t>{7, 6}));
        EXPECT_EQ(stack.A.scalar_type(), dtype);
        const double tol = dtype == torch::kFloat64 ? 1e-13 : 1e-5;
        EXPECT_TRUE(torch::allclose(torch::mm(stack.B, stack.A).to(torch::kFloat64), expected, tol, tol)) << dtype;
        const torch::Tensor merged = flora_merged_update(group);
        EXPECT_TRUE(torch::allclose(merged.to(torch::kFloat64), expected, tol, tol)) << dtype;
        EXPECT_TRUE(torch::allclose(average_update(group).to(torch::kFloat64), expected, tol, tol)) << dtype;
    }
}

TEST(FLoRA, StackBlocksAreTheClientsAAndTheirWeightedScaledB) {
    // p = 1/4, 3/4; s = 2, 0.5: B blocks scaled by 1/2 and 3/8.
    const std::vector<LoraFactors> group = {factors(mat({{1, 2}}), mat({{4}, {8}}), 1, 2.0),
                                            factors(mat({{3, 4}, {5, 6}}), mat({{8, 16}, {0, -8}}), 3, 0.5)};
    const FloraStack stack = flora_stack(group);
    EXPECT_TRUE(torch::equal(stack.A, mat({{1, 2}, {3, 4}, {5, 6}})));
    EXPECT_TRUE(torch::equal(stack.B, mat({{2, 3, 6}, {4, 0, -3}})));
}

// ---------------------------------------------------------------- every rule

TEST(AllRules, RejectAnEmptyGroup) { expect_every_rule_rejects({}, "no clients"); }

TEST(AllRules, RejectMismatchedInputDimension) {
    auto group = uniform_group();
    group[1] = random_factors(2, 6, 4, 1, 8.0, torch::kFloat64, 1);
    expect_every_rule_rejects(group, "client 1: d_in 6");
}

TEST(AllRules, RejectMismatchedOutputDimension) {
    auto group = uniform_group();
    group[2].B = torch::randn({3, 2}, torch::kFloat64);
    expect_every_rule_rejects(group, "client 2: d_out 3");
}

TEST(AllRules, RejectFactorsWhoseRanksDisagree) {
    auto group = uniform_group();
    group[0].B = torch::randn({4, 3}, torch::kFloat64);
    expect_every_rule_rejects(group, "client 0: rank mismatch");
}

TEST(AllRules, RejectNaNAndInf) {
    auto group = uniform_group();
    group[1].B = group[1].B.clone();
    group[1].B[2][1] = std::numeric_limits<double>::quiet_NaN();
    expect_every_rule_rejects(group, "client 1: B contains NaN");
    group = uniform_group();
    for (auto& f : group) f.A = f.A.clone();
    group[2].A[0][0] = std::numeric_limits<double>::infinity();
    expect_every_rule_rejects(group, "client 2: A contains NaN or Inf");
}

TEST(AllRules, RejectNonPositiveSampleCounts) {
    for (double bad : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN()}) {
        auto group = uniform_group();
        group[1].samples = bad;
        expect_every_rule_rejects(group, "client 1: sample count");
    }
}

TEST(AllRules, RejectNonPositiveScaleAndMixedDtypes) {
    auto group = uniform_group();
    group[0].scale = 0;
    expect_every_rule_rejects(group, "client 0: scale");
    group = uniform_group();
    group[2].B = group[2].B.to(torch::kFloat32);
    expect_every_rule_rejects(group, "client 2: dtype");
}

TEST(AllRules, NameTheClientByPositionWhenItHasNoId) {
    auto group = uniform_group();
    for (auto& f : group) f.client = -1;
    group[2].samples = 0;
    expect_every_rule_rejects(group, "client at position 2");
}

TEST(AllRules, ReturnFreshTensorsThatShareNothingAndRecordNoGradient) {
    using Aggregate = std::function<std::vector<LoraFactors>(const std::vector<LoraFactors>&)>;
    const std::vector<std::pair<std::string, Aggregate>> rules = {
        {"fedit", aggregate_fedit}, {"ffa", aggregate_ffa}, {"fedsa", aggregate_fedsa},
        {"hetlora", aggregate_hetlora}, {"flexlora", aggregate_flexlora}};
    for (const auto& [name, rule] : rules) {
        auto group = uniform_group();
        for (auto& f : group) {
            f.A.requires_grad_(true);
            f.B.requires_grad_(true);
        }
        std::vector<LoraFactors> before;
        for (const auto& f : group) before.push_back(factors(f.A.detach().clone(), f.B.detach().clone(), 1));
        auto out = rule(group);
        const auto again = rule(group);
        ASSERT_EQ(out.size(), group.size()) << name;
        for (size_t k = 0; k < out.size(); ++k) {
            EXPECT_FALSE(out[k].A.requires_grad()) << name;
            EXPECT_FALSE(out[k].B.requires_grad()) << name;
            EXPECT_TRUE(torch::equal(out[k].A, again[k].A)) << name << " is not deterministic";
            EXPECT_TRUE(torch::equal(out[k].B, again[k].B)) << name << " is not deterministic";
        }
        // Training client 0's result in place must not touch the other results or the inputs.
        out[0].A.add_(1.0);
        out[0].B.add_(1.0);
        for (size_t k = 0; k < out.size(); ++k) {
            EXPECT_TRUE(torch::equal(group[k].A.detach(), before[k].A)) << name;
            EXPECT_TRUE(torch::equal(group[k].B.detach(), before[k].B)) << name;
            if (k > 0) {
                EXPECT_TRUE(torch::equal(out[k].A, again[k].A)) << name << " shares storage between clients";
                EXPECT_TRUE(torch::equal(out[k].B, again[k].B)) << name << " shares storage between clients";
            }
        }
    }
}
