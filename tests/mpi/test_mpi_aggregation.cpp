// Runs on every rank of `mpirun -np 3`: the communicator's primitives, and rank-0 aggregation of
// uploads that travelled through MPI equals the same aggregation computed serially, bit for bit.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <algorithm>

#include "h2tune/comm/communicator.h"
#include "h2tune/core/rng.h"
#include "h2tune/core/wire.h"
#include "h2tune/method/alignment.h"
#include "h2tune/method/sparse_bank.h"

using namespace h2tune;

namespace {

Communicator* g_comm = nullptr;
const BankShape kShape{6, 3, 8};  // L_g = 6, M = 3, R = 8
constexpr int kClients = 7;

// Client k's upload, a pure function of k (rank, depth, values, mask and relation all vary).
ClientUpload make_upload(int k) {
    torch::manual_seed(static_cast<uint64_t>(1000 + k));
    ClientUpload u;
    u.client = k;
    u.samples = 10.0 + 7 * k;
    u.rank = 1 + k % kShape.max_rank;
    u.layers = 2 + k % 5;
    std::vector<torch::Tensor> rows;
    for (int64_t m = 0; m < kShape.modules; ++m)
        rows.push_back(select_mask(initial_mask_scores(stream_key(5, static_cast<uint64_t>(k), static_cast<uint64_t>(m)),
                                                       kShape.max_rank),
                                   u.rank, kShape.max_rank, "topk"));
    u.mask = torch::stack(rows);
    u.relation = relation_matrix(torch::randn({kShape.global_layers, u.layers}), 0.7);
    u.values = torch::randn({u.layers, kShape.modules, u.rank * u.rank});
    return u;
}

void pack(ByteWriter& w, const ClientUpload& u) {
    w.put<int32_t>(u.client);
    w.put<double>(u.samples);
    w.put<int64_t>(u.rank);
    w.put<int64_t>(u.layers);
    w.put_array(u.mask.data_ptr<int64_t>(), static_cast<size_t>(u.mask.numel()));
    torch::Tensor rel = u.relation.contiguous(), val = u.values.contiguous();
    w.put_array(rel.data_ptr<float>(), static_cast<size_t>(rel.numel()));
    w.put_array(val.data_ptr<float>(), static_cast<size_t>(val.numel()));
}

ClientUpload unpack(ByteReader& r) {
    ClientUpload u;
    u.client = r.get<int32_t>();
    u.samples = r.get<double>();
    u.rank = r.get<int64_t>();
    u.layers = r.get<int64_t>();
    auto mask = r.get_array<int64_t>();
    auto rel = r.get_array<float>();
    auto val = r.get_array<float>();
    u.mask = torch::tensor(mask, torch::kInt64).reshape({kShape.modules, u.rank * u.rank});
    u.relation = torch::tensor(rel).reshape({kShape.global_layers, u.layers});
    u.values = torch::tensor(val).reshape({u.layers, kShape.modules, u.rank * u.rank});
    return u;
}

}  // namespace

TEST(MpiComm, SendRecvBroadcastGatherAndReductions) {
    Communicator& c = *g_comm;
    ASSERT_GE(c.size(), 2);
    Bytes msg;
    if (c.rank() == 0) msg = {1, 2, 3, 4, 5};
    c.broadcast(msg, 0);
    EXPECT_EQ(msg, (Bytes{1, 2, 3, 4, 5}));
    // Ring: everyone sends its rank repeated rank+1 times to the next rank.
    Bytes mine(static_cast<size_t>(c.rank() + 1), static_cast<uint8_t>(c.rank()));
    const int next = (c.rank() + 1) % c.size(), prev = (c.rank() + c.size() - 1) % c.size();
    if (c.rank() % 2 == 0) {
        c.send(mine, next, 7);
        Bytes got = c.recv(prev, 7);
        EXPECT_EQ(got, Bytes(static_cast<size_t>(prev + 1), static_cast<uint8_t>(prev)));
    } else {
        Bytes got = c.recv(prev, 7);
        c.send(mine, next, 7);
        EXPECT_EQ(got, Bytes(static_cast<size_t>(prev + 1), static_cast<uint8_t>(prev)));
    }
    auto all = c.gather(mine, 0);
    if (c.rank() == 0) {
        ASSERT_EQ(static_cast<int>(all.size()), c.size());
        for (int r = 0; r < c.size(); ++r) EXPECT_EQ(all[static_cast<size_t>(r)].size(), static_cast<size_t>(r + 1));
    }
    EXPECT_DOUBLE_EQ(c.allreduce_sum(1.0), static_cast<double>(c.size()));
    EXPECT_EQ(c.allreduce_sum(static_cast<int64_t>(c.rank())), static_cast<int64_t>(c.size() * (c.size() - 1) / 2));
    EXPECT_DOUBLE_EQ(c.allreduce_max(static_cast<double>(c.rank())), static_cast<double>(c.size() - 1));
    Bytes empty;
    auto empties = c.gather(empty, 0);
    if (c.rank() == 0) {
        for (const auto& e : empties) EXPECT_TRUE(e.empty());
    }
}

TEST(MpiAggregation, RankZeroResultEqualsSerialAggregation) {
    Communicator& c = *g_comm;
    // More clients than ranks: client k lives on rank k mod size.
    ByteWriter w;
    for (int k = c.rank(); k < kClients; k += c.size()) pack(w, make_upload(k));
    auto parts = c.gather(w.buffer(), 0);
    if (c.rank() != 0) return;

    std::vector<ClientUpload> received;
    for (const auto& part : parts) {
        ByteReader r(part.data(), part.size(), "test upload");
        while (!r.done()) received.push_back(unpack(r));
    }
    ASSERT_EQ(received.size(), static_cast<size_t>(kClients));
    std::sort(received.begin(), received.end(), [](const auto& a, const auto& b) { return a.client < b.client; });
    std::vector<ClientUpload> serial;
    for (int k = 0; k < kClients; ++k) serial.push_back(make_upload(k));

    torch::manual_seed(9);
    torch::Tensor initial = torch::randn({kShape.global_layers, kShape.modules, kShape.max_rank * kShape.max_rank});
    torch::Tensor via_mpi = initial.clone(), direct = initial.clone();
    std::vector<const ClientUpload*> a, b;
    for (const auto& u : received) {
        ASSERT_EQ(validate_upload(u, kShape), "") << u.client;
        a.push_back(&u);
    }
    for (const auto& u : serial) b.push_back(&u);
    aggregate_sparse(via_mpi, a);
    aggregate_sparse(direct, b);
    EXPECT_TRUE(torch::equal(via_mpi, direct));
    EXPECT_FALSE(torch::equal(via_mpi, initial));
}

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    MpiSession mpi(&argc, &argv);
    int rc = 0;
    {
        Communicator comm;
        g_comm = &comm;
        // Only rank 0 prints; every rank runs and asserts.
        if (comm.rank() != 0) {
            auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
            delete listeners.Release(listeners.default_result_printer());
        }
        rc = RUN_ALL_TESTS();
        // A failure on any rank fails the job.
        rc = comm.allreduce_max(static_cast<double>(rc)) > 0 ? 1 : 0;
        g_comm = nullptr;
    }
    return rc;
}
