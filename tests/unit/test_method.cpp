#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "h2tune/core/error.h"
#include "h2tune/method/alignment.h"
#include "h2tune/method/h2tune_server.h"
#include "h2tune/method/mask_refresh.h"
#include "h2tune/method/sparse_bank.h"

using namespace h2tune;

namespace {

// One module type, R = 2 (4 entries per middle matrix), L_g = 2 slots.
BankShape small_shape() { return BankShape{2, 1, 2}; }

ClientUpload upload(int client, double n, std::vector<int64_t> mask, std::vector<std::vector<float>> relation,
                    std::vector<std::vector<float>> values_per_layer) {
    ClientUpload u;
    u.client = client;
    u.samples = n;
    u.rank = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(mask.size()))));
    u.layers = static_cast<int64_t>(values_per_layer.size());
    u.mask = torch::tensor(mask, torch::kInt64).reshape({1, -1});
    std::vector<float> rel;
    for (auto& row : relation) rel.insert(rel.end(), row.begin(), row.end());
    u.relation = torch::tensor(rel, torch::kFloat32).reshape({static_cast<int64_t>(relation.size()), -1});
    std::vector<float> vals;
    for (auto& layer : values_per_layer) vals.insert(vals.end(), layer.begin(), layer.end());
    u.values = torch::tensor(vals, torch::kFloat32).reshape({u.layers, 1, -1});
    return u;
}

}  // namespace

TEST(SparseBank, OneClientIsIdentityOnCoveredEntriesAndKeepsTheRest) {
    BankShape s{3, 2, 4};
    torch::manual_seed(1);
    torch::Tensor bank = torch::randn({3, 2, 16});
    const torch::Tensor before = bank.clone();
    ClientUpload u;
    u.samples = 10;
    u.rank = 2;
    u.layers = 3;
    u.mask = torch::tensor(std::vector<int64_t>{0, 5, 6, 15, 1, 2, 3, 4}, torch::kInt64).reshape({2, 4});
    u.relation = torch::eye(3);  // layer l <-> slot l
    u.values = torch::randn({3, 2, 4});
    ASSERT_EQ(validate_upload(u, s), "");
    aggregate_sparse(bank, {&u});
    for (int64_t m = 0; m < 2; ++m) {
        torch::Tensor covered = bank.select(1, m).index_select(1, u.mask[m]);
        EXPECT_TRUE(torch::allclose(covered, u.values.select(1, m))) << m;
    }
    // Entry 7 of module 0 and entry 10 of module 1 were covered by nobody.
    EXPECT_TRUE(torch::equal(bank[1][0][7], before[1][0][7]));
    EXPECT_TRUE(torch::equal(bank[2][1][10], before[2][1][10]));
}

TEST(SparseBank, HandComputedMultiClientExampleWithDensitiesAndRelations) {
    BankShape s = small_shape();
    torch::Tensor bank = torch::full({2, 1, 4}, 100.0f);
    // Client A: rank 2 (covers all 4 entries, density 1), one layer spread 0.25 / 0.75 over slots.
    ClientUpload a = upload(0, 2.0, {0, 1, 2, 3}, {{0.25f}, {0.75f}}, {{1, 2, 3, 4}});
    // Client B: rank 1 (covers entry 2 only, density 1/4), two layers, layer 0 -> slot 0, layer 1 -> slot 1.
    ClientUpload b = upload(1, 1.0, {2}, {{1.0f, 0.0f}, {0.0f, 1.0f}}, {{10}, {20}});
    ASSERT_EQ(validate_upload(a, s), "");
    ASSERT_EQ(validate_upload(b, s), "");
    aggregate_sparse(bank, {&a, &b});
    // slot 0: A weight 2*0.25 = 0.5 on every entry; B weight 1 on entry 2.
    //   e0 = 1, e1 = 2, e2 = (0.5*3 + 1*10) / 1.5 = 7.6667, e3 = 4
    // slot 1: A weight 1.5; B weight 1 on entry 2: e2 = (1.5*3 + 20) / 2.5 = 9.8
    std::vector<float> expected = {1, 2, 11.5f / 1.5f, 4, 1, 2, 24.5f / 2.5f, 4};
    EXPECT_TRUE(torch::allclose(bank.reshape({-1}), torch::tensor(expected), 1e-5, 1e-6)) << bank;
}

TEST(SparseBank, FixedOrderMakesAggregationReproducible) {
    BankShape s{2, 1, 2};
    ClientUpload a = upload(0, 3.0, {0, 1, 2, 3}, {{0.3f}, {0.7f}}, {{1.1f, -2, 3, 0.5f}});
    ClientUpload b = upload(1, 5.0, {1}, {{0.6f}, {0.4f}}, {{7}});
    torch::Tensor x = bank_zeros(s), y = bank_zeros(s);
    aggregate_sparse(x, {&a, &b});
    aggregate_sparse(y, {&a, &b});
    EXPECT_TRUE(torch::equal(x, y));
}

namespace {

// The aggregation formula in plain tensor operations (the implementation before
// bench/bench_aggregation): the reference the fast aggregate_sparse is checked against.
torch::Tensor aggregate_reference(torch::Tensor bank, const std::vector<const ClientUpload*>& uploads) {
    const int64_t Lg = bank.size(0), M = bank.size(1);
    torch::Tensor numerator = torch::zeros_like(bank), denominator = torch::zeros_like(bank);
    for (const ClientUpload* u : uploads) {
        const torch::Tensor weighted = u->relation * u->samples;
        const torch::Tensor coverage = weighted.sum(1);
        for (int64_t m = 0; m < M; ++m) {
            const torch::Tensor idx = u->mask[m];
            numerator.select(1, m).index_add_(1, idx, torch::matmul(weighted, u->values.select(1, m)));
            denominator.select(1, m).index_add_(1, idx, coverage.unsqueeze(1).expand({Lg, idx.size(0)}));
        }
    }
    return torch::where(denominator > 0, numerator / denominator.clamp_min(1e-30), bank);
}

// K random uploads shaped like the default job's: ranks cycling R/4, R/2, R, layers 4, 6, 8 (at most
// L_g), topk masks on random scores, column-stochastic relations (one one-hot, as align = end).
std::vector<ClientUpload> random_uploads(int64_t K, const BankShape& s, uint64_t seed) {
    torch::manual_seed(seed);
    std::vector<ClientUpload> out;
    for (int64_t k = 0; k < K; ++k) {
        ClientUpload u;
        u.client = static_cast<int>(k);
        u.samples = 10.0 + static_cast<double>(k % 5);
        u.rank = std::max<int64_t>(1, k % 3 == 0 ? s.max_rank / 4 : k % 3 == 1 ? s.max_rank / 2 : s.max_rank);
        u.layers = std::min<int64_t>(s.global_layers, 4 + 2 * (k % 3));
        std::vector<torch::Tensor> rows;
        for (int64_t m = 0; m < s.modules; ++m)
            rows.push_back(select_mask(torch::rand({s.max_rank * s.max_rank}), u.rank, s.max_rank, "topk"));
        u.mask = torch::stack(rows);
        u.relation = k % 4 == 3 ? relation_end(s.global_layers, u.layers)
                                : relation_matrix(torch::randn({s.global_layers, u.layers}), 1.0);
        u.values = torch::randn({u.layers, s.modules, u.rank * u.rank});
        out.push_back(std::move(u));
    }
    return out;
}

std::vector<const ClientUpload*> pointers(const std::vector<ClientUpload>& uploads) {
    std::vector<const ClientUpload*> p;
    for (const auto& u : uploads) p.push_back(&u);
    return p;
}

}  // namespace

TEST(SparseBank, AggregationMatchesTheTensorFormulaForAnySlotCountAndThreadCount) {
    // L_g = 8 takes the fixed-width path, 5 the general one. 90 clients of ranks 8/16/32 cover
    // 282240 entries, enough for aggregate_sparse to split the work over two threads when allowed.
    const int threads_before = torch::get_num_threads();
    for (const BankShape s : {BankShape{8, 7, 32}, BankShape{5, 3, 8}}) {
        std::vector<ClientUpload> uploads = random_uploads(s.max_rank == 32 ? 90 : 9, s, 17);
        // One client deeper than the bank (L_k > L_g: the general layer loop).
        uploads[4].layers = s.global_layers + 2;
        uploads[4].relation = relation_matrix(torch::randn({s.global_layers, uploads[4].layers}), 1.0);
        uploads[4].values = torch::randn({uploads[4].layers, s.modules, uploads[4].rank * uploads[4].rank});
        for (const auto& u : uploads) ASSERT_EQ(validate_upload(u, s), "");
        torch::manual_seed(5);
        const torch::Tensor start = torch::randn({s.global_layers, s.modules, s.max_rank * s.max_rank});
        const torch::Tensor expected = aggregate_reference(start.clone(), pointers(uploads));
        std::vector<torch::Tensor> results;
        for (int threads : {1, 2}) {
            torch::set_num_threads(threads);
            torch::Tensor bank = start.clone();
            aggregate_sparse(bank, pointers(uploads));
            EXPECT_TRUE(torch::allclose(bank, expected, 1e-5, 1e-6)) << (bank - expected).abs().max();
            results.push_back(bank);
        }
        EXPECT_TRUE(torch::equal(results[0], results[1]));  // bit for bit, whatever the threads
    }
    torch::set_num_threads(threads_before);
}

TEST(SparseBank, AggregationLeavesOtherReferencesToTheBankAlone) {
    const BankShape s{4, 2, 4};
    const std::vector<ClientUpload> uploads = random_uploads(3, s, 3);
    torch::Tensor bank = torch::randn({4, 2, 16});
    const torch::Tensor alias = bank;  // e.g. a checkpoint being written from it
    const torch::Tensor before = bank.clone();
    aggregate_sparse(bank, pointers(uploads));
    EXPECT_TRUE(torch::equal(alias, before));
    EXPECT_FALSE(torch::equal(bank, before));
}

TEST(SparseBank, AggregationRefusesMasksThatAreNotStrictlyAscendingAndKeepsTheBank) {
    const BankShape s{4, 2, 4};
    for (const std::vector<int64_t>& bad_row :
         {std::vector<int64_t>{3, 1, 2, 0}, std::vector<int64_t>{0, 1, 1, 2}, std::vector<int64_t>{0, 1, 2, 16},
          std::vector<int64_t>{-1, 0, 1, 2}}) {
        std::vector<ClientUpload> uploads = random_uploads(3, s, 4);
        uploads[1].rank = 2;
        uploads[1].mask = torch::stack({torch::tensor(bad_row, torch::kInt64), torch::tensor(bad_row, torch::kInt64)});
        uploads[1].values = torch::randn({uploads[1].layers, 2, 4});
        torch::Tensor bank = torch::randn({4, 2, 16});
        const torch::Tensor before = bank.clone();
        EXPECT_THROW(aggregate_sparse(bank, pointers(uploads)), DataError);
        EXPECT_TRUE(torch::equal(bank, before));
    }
}

TEST(SparseBank, ValidationRejectsBadPayloadsWithAReason) {
    BankShape s = small_shape();
    auto good = [] { return upload(0, 2.0, {0, 1, 2, 3}, {{0.25f}, {0.75f}}, {{1, 2, 3, 4}}); };
    ClientUpload u = good();
    EXPECT_EQ(validate_upload(u, s), "");
    u = good();
    u.values[0][0][1] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_NE(validate_upload(u, s).find("NaN"), std::string::npos);
    u = good();
    u.values[0][0][0] = std::numeric_limits<float>::infinity();
    EXPECT_NE(validate_upload(u, s).find("Inf"), std::string::npos);
    u = good();
    u.mask[0][3] = 4;  // R*R = 4
    EXPECT_NE(validate_upload(u, s).find("out of range"), std::string::npos);
    u = good();
    u.mask[0][0] = 1;  // duplicate
    EXPECT_NE(validate_upload(u, s).find("ascending"), std::string::npos);
    u = good();
    u.relation[0][0] = 0.5f;
    EXPECT_NE(validate_upload(u, s).find("sum to 1"), std::string::npos);
    u = good();
    u.samples = 0;
    EXPECT_NE(validate_upload(u, s).find("sample count"), std::string::npos);
    u = good();
    u.rank = 3;
    EXPECT_NE(validate_upload(u, s).find("rank"), std::string::npos);
    u = good();
    u.values = torch::zeros({1, 1, 3});
    EXPECT_NE(validate_upload(u, s).find("values must be"), std::string::npos);
}

TEST(SparseBank, GatherAndRelationMixGiveThePersonalisedMiddleMatrices) {
    torch::manual_seed(3);
    torch::Tensor bank = torch::randn({3, 2, 9});  // L_g = 3, M = 2, R = 3
    torch::Tensor mask = torch::tensor(std::vector<int64_t>{0, 4, 8, 1, 2, 3}, torch::kInt64).reshape({2, 3});
    torch::Tensor slices = bank_gather(bank, mask);
    ASSERT_EQ(slices.sizes(), (std::vector<int64_t>{3, 2, 3}));
    EXPECT_FLOAT_EQ(slices[2][1][0].item<float>(), bank[2][1][1].item<float>());
    torch::Tensor pi = relation_matrix(relation_prior(3, 2, 0.5), 1.0);
    torch::Tensor mixed = relation_mix(pi, slices);  // [L_k = 2, M, n]
    for (int64_t l = 0; l < 2; ++l) {
        torch::Tensor expected = (pi.select(1, l).reshape({3, 1, 1}) * slices).sum(0);
        EXPECT_TRUE(torch::allclose(mixed[l], expected, 1e-6, 1e-6));
    }
}

TEST(Relation, ColumnsSumToOneAndPriorPrefersMatchingDepth) {
    torch::Tensor pi = relation_matrix(relation_prior(8, 4, 0.5), 1.0);
    EXPECT_TRUE(torch::allclose(pi.sum(0), torch::ones({4})));
    EXPECT_EQ(pi.select(1, 0).argmax().item<int64_t>(), 0);  // first client layer reads the first slot
    EXPECT_EQ(pi.select(1, 3).argmax().item<int64_t>(), 7);  // last reads the last
    torch::Tensor end = relation_end(8, 4);
    EXPECT_FLOAT_EQ(end[4][0].item<float>(), 1.0f);
    EXPECT_FLOAT_EQ(end[7][3].item<float>(), 1.0f);
    EXPECT_TRUE(torch::allclose(end.sum(0), torch::ones({4})));
    EXPECT_THROW(relation_end(2, 4), ConfigError);
}

TEST(Relation, GradientsReachTheRelationLogitsThroughT) {
    torch::manual_seed(5);
    torch::Tensor z = relation_prior(4, 3, 0.5).requires_grad_(true);
    torch::Tensor slices = torch::randn({4, 2, 4});
    torch::Tensor t = relation_mix(relation_matrix(z, 1.0), slices);
    (t * torch::randn_like(t)).sum().backward();
    ASSERT_TRUE(z.grad().defined());
    EXPECT_GT(z.grad().abs().sum().item<double>(), 0.0);
}

TEST(Mask, TopkSelectsLargestScoresInAscendingIndexOrder) {
    torch::Tensor scores = torch::tensor(std::vector<float>{0.1f, 0.9f, 0.3f, 0.8f, 0.0f, 0.7f, 0.2f, 0.6f, 0.5f});
    torch::Tensor m = select_mask(scores, 2, 3, "topk");  // 4 largest: 1 (0.9), 3 (0.8), 5 (0.7), 7 (0.6)
    EXPECT_TRUE(torch::equal(m, torch::tensor(std::vector<int64_t>{1, 3, 5, 7})));
    // Ties break towards the lower index, deterministically.
    torch::Tensor flat = torch::ones({9});
    EXPECT_TRUE(torch::equal(select_mask(flat, 1, 3, "topk"), torch::tensor(std::vector<int64_t>{0})));
    EXPECT_TRUE(torch::equal(select_mask(flat, 2, 3, "block"), torch::tensor(std::vector<int64_t>{0, 1, 3, 4})));
    EXPECT_THROW(select_mask(flat, 4, 3, "topk"), ConfigError);
    EXPECT_THROW(select_mask(flat, 2, 3, "random"), ConfigError);
}

TEST(Mask, InitialScoresDifferPerClientAndAreReproducible) {
    auto a = initial_mask_scores(11, 8), b = initial_mask_scores(11, 8), c = initial_mask_scores(12, 8);
    EXPECT_TRUE(torch::equal(a, b));
    EXPECT_FALSE(torch::equal(select_mask(a, 4, 8, "topk"), select_mask(c, 4, 8, "topk")));
}

TEST(MaskRefresh, MagnitudeScoreIsThePersonalisedMatrixSummedOverLayers) {
    // L_g = 2 slots, M = 1, R = 2; a client with 2 layers.
    torch::Tensor bank = torch::tensor({1.f, -2.f, 0.f, 4.f,    // slot 0
                                        3.f, 2.f, 0.f, -4.f})  // slot 1
                             .reshape({2, 1, 4});
    torch::Tensor pi = torch::tensor({0.5f, 1.f, 0.5f, 0.f}).reshape({2, 2});  // columns sum to 1
    // layer 0: 0.5*slot0 + 0.5*slot1 = [2, 0, 0, 0]; layer 1: slot0 = [1, -2, 0, 4]
    torch::Tensor s = magnitude_mask_scores(bank, pi);
    EXPECT_TRUE(torch::allclose(s, torch::tensor({3.f, 2.f, 0.f, 4.f}).reshape({1, 4})));
    EXPECT_THROW(magnitude_mask_scores(bank, torch::ones({3, 2})), ModelError);
}

TEST(MaskRefresh, TaylorScoreUsesMeasuredValuesInsideTheMaskAndTheMeanGradientOutside) {
    torch::Tensor magnitude = torch::tensor({3.f, 2.f, 0.f, 4.f, 1.f, 1.f, 1.f, 1.f}).reshape({2, 4});
    torch::Tensor mask = torch::tensor(std::vector<int64_t>{1, 3, 0, 2}).reshape({2, 2});
    torch::Tensor taylor = torch::tensor({0.25f, 0.5f, 7.f, 8.f}).reshape({2, 2});
    torch::Tensor grad_scale = torch::tensor({0.1f, 2.f});
    torch::Tensor s = taylor_mask_scores(magnitude, mask, taylor, grad_scale);
    EXPECT_TRUE(torch::allclose(s, torch::tensor({0.3f, 0.25f, 0.f, 0.5f, 7.f, 2.f, 8.f, 2.f}).reshape({2, 4})));
    // Rank 1 (R = 2) keeps the best entry: module 0 the measured 0.5 at entry 3, module 1 the 8 at entry 2.
    EXPECT_EQ(select_mask(s[0], 1, 2, "topk").item<int64_t>(), 3);
    EXPECT_EQ(select_mask(s[1], 1, 2, "topk").item<int64_t>(), 2);
}

TEST(MaskRefresh, TaylorAccumulatorIsAnExponentialMovingAverage) {
    TaylorScore t(1, 2, 0.5);
    EXPECT_TRUE(t.empty());
    torch::Tensor v = torch::tensor({1.f, -2.f, 3.f, 4.f}).reshape({2, 1, 2});  // 2 layers
    torch::Tensor g = torch::tensor({2.f, 1.f, -1.f, 0.f}).reshape({2, 1, 2});
    t.accumulate(v, g);  // first step sets: |v*g| summed over layers = [2+3, 2+0], mean |g| = 1
    EXPECT_TRUE(torch::allclose(t.scores(), torch::tensor({5.f, 2.f}).reshape({1, 2})));
    EXPECT_NEAR(t.grad_scale().item<double>(), 1.0, 1e-6);
    t.accumulate(v, torch::zeros_like(g));  // then blends: 0.5 * old + 0.5 * 0
    EXPECT_TRUE(torch::allclose(t.scores(), torch::tensor({2.5f, 1.f}).reshape({1, 2})));
    EXPECT_NEAR(t.grad_scale().item<double>(), 0.5, 1e-6);
    EXPECT_EQ(t.steps(), 2);
    EXPECT_THROW(t.accumulate(v, g.narrow(2, 0, 1)), ModelError);
    t.reset();
    EXPECT_TRUE(t.empty());
    EXPECT_EQ(t.scores().sum().item<double>(), 0.0);
}

// ------------------------------------------------------------------ rank 0's H2Tune server

namespace {

BankUpload server_upload(int client, int64_t layers, int64_t rank, const BankShape& shape) {
    BankUpload u;
    u.client = client;
    u.samples = 10.0 + client;
    u.rank = rank;
    u.relation = torch::softmax(torch::randn({shape.global_layers, layers}), 0);
    u.values = torch::randn({layers, shape.modules, rank * rank});
    return u;
}

torch::Tensor first_entries(int64_t modules, int64_t entries) {
    return torch::arange(entries, torch::kInt64).unsqueeze(0).repeat({modules, 1}).contiguous();
}

}  // namespace

TEST(H2TuneServer, AcceptsValidUploadsAndAggregatesThemInClientOrder) {
    torch::manual_seed(3);
    const BankShape shape{3, 2, 4};
    H2TuneServer server(shape, 2, false, 0.0);
    server.announce_masks(0, first_entries(2, 4), 40);
    server.announce_masks(1, first_entries(2, 9), 60);
    BankUpload a = server_upload(0, 2, 2, shape), b = server_upload(1, 3, 3, shape);
    // The reference: the pure aggregation over the same uploads, in client order.
    torch::Tensor expected = bank_zeros(shape);
    ClientUpload ca{0, a.samples, 2, 2, first_entries(2, 4), a.relation, a.values};
    ClientUpload cb{1, b.samples, 3, 3, first_entries(2, 9), b.relation, b.values};
    aggregate_sparse(expected, {&ca, &cb});
    EXPECT_EQ(server.accept(b), "");  // arrival order does not matter
    EXPECT_EQ(server.accept(a), "");
    server.aggregate();
    EXPECT_TRUE(torch::equal(server.bank(), expected));
    EXPECT_TRUE(torch::equal(server.slot(1).relation, b.relation));
    EXPECT_TRUE(torch::equal(server.download_for(0).values, bank_gather(expected, first_entries(2, 4))));
}

TEST(H2TuneServer, RefusesWithAReasonAndKeepsTheBank) {
    const BankShape shape{3, 2, 4};
    H2TuneServer server(shape, 3, false, 100.0);
    server.announce_masks(0, first_entries(2, 4), 0);
    torch::Tensor bad = first_entries(2, 4);
    bad[0][3] = 99;
    server.announce_masks(1, bad, 0);
    server.announce_masks(2, first_entries(2, 4), 0);
    EXPECT_FALSE(server.delivers_to(1));
    EXPECT_NE(server.accept(server_upload(1, 2, 2, shape)).find("mask index out of range"), std::string::npos);
    EXPECT_NE(server.accept(server_upload(0, 2, 3, shape)).find("claims rank 3 but announced masks of 4 entries"),
              std::string::npos);
    BankUpload nan = server_upload(0, 2, 2, shape);
    nan.values[0][0][0] = std::nanf("");
    EXPECT_NE(server.accept(nan), "");
    BankUpload big = server_upload(2, 2, 2, shape);
    big.values.mul_(1e6);
    EXPECT_NE(server.accept(big).find("exceed federation.max_abs_value"), std::string::npos);
    BankUpload taylor = server_upload(0, 2, 2, shape);
    taylor.taylor = -torch::ones({2, 4});
    taylor.grad_scale = torch::ones({2});
    EXPECT_EQ(server.accept(taylor), "Taylor scores must be finite and non-negative");
    server.aggregate();
    EXPECT_TRUE(torch::equal(server.bank(), bank_zeros(shape)));
    EXPECT_FALSE(server.slot(0).relation.defined());
}

TEST(H2TuneServer, StateRoundTripsAndRefreshReselectsParticipantsOnly) {
    torch::manual_seed(5);
    const BankShape shape{2, 1, 4};
    H2TuneServer server(shape, 2, false, 0.0);
    server.announce_masks(0, first_entries(1, 4), 12);
    server.announce_masks(1, first_entries(1, 4), 12);
    for (int k : {0, 1}) {
        BankUpload u = server_upload(k, 2, 2, shape);
        u.values = torch::rand({2, 1, 4}) + 1.0;
        ASSERT_EQ(server.accept(u), "");
    }
    server.aggregate();
    // Put weight outside the masks so that |M| prefers other entries.
    H2TuneServer restored(shape, 2, false, 0.0);
    TensorMap state = server.state();
    state["bank"] = state["bank"].clone();
    state["bank"].index_put_({torch::indexing::Slice(), 0, 15}, 50.0);
    restored.load_state(state);
    EXPECT_DOUBLE_EQ(restored.slot(1).mask_bytes, 12);
    restored.refresh_masks(1, 1, false, {true, false});
    EXPECT_TRUE(restored.slot(0).new_masks.defined());
    EXPECT_GT(restored.slot(0).mask_changed, 0.0);
    EXPECT_EQ(restored.slot(0).masks[0][3].item<int64_t>(), 15);
    EXPECT_FALSE(restored.slot(1).new_masks.defined());  // sat the round out
    restored.refresh_masks(2, 3, false, {true, true});  // not due: clears last round's news
    EXPECT_FALSE(restored.slot(0).new_masks.defined());
    EXPECT_DOUBLE_EQ(restored.slot(0).mask_changed, 0.0);
    H2TuneServer again(shape, 2, false, 0.0);
    again.load_state(restored.state());
    EXPECT_TRUE(torch::equal(again.slot(0).masks, restored.slot(0).masks));
    EXPECT_TRUE(torch::equal(again.bank(), restored.bank()));
}
