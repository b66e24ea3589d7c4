#include <gtest/gtest.h>

#include <string>

#include "h2tune/app/client_placement.h"
#include "h2tune/core/error.h"

using namespace h2tune;

namespace {
JobConfig job_with(const std::vector<int>& ranks_per_client) {
    JobConfig job;
    job.source = "jobs/x.ini";
    for (size_t k = 0; k < ranks_per_client.size(); ++k) {
        ClientConfig c;
        c.index = static_cast<int>(k);
        c.ranks_per_client = ranks_per_client[k];
        job.clients.push_back(c);
    }
    return job;
}
}  // namespace

TEST(ClientPlacement, OneRankPerClientIsRoundRobin) {
    const auto p = place_clients(job_with({1, 1, 1, 1, 1}), 2);
    ASSERT_EQ(p.size(), 5u);
    for (size_t k = 0; k < p.size(); ++k) {
        EXPECT_EQ(p[k].first, static_cast<int>(k % 2));
        EXPECT_EQ(p[k].size, 1);
    }
    EXPECT_FALSE(has_rank_groups(p));
}

TEST(ClientPlacement, GroupsGetContiguousRanksInClientOrder) {
    const auto p = place_clients(job_with({2, 1, 3}), 6);
    EXPECT_TRUE(has_rank_groups(p));
    EXPECT_EQ(p[0].first, 0);
    EXPECT_EQ(p[0].size, 2);
    EXPECT_EQ(p[1].first, 2);
    EXPECT_EQ(p[1].size, 1);
    EXPECT_EQ(p[2].first, 3);
    EXPECT_EQ(p[2].size, 3);
    EXPECT_TRUE(p[2].contains(5));
    EXPECT_FALSE(p[2].contains(2));
    EXPECT_FALSE(p[2].contains(6));
}

TEST(ClientPlacement, RanksThatDoNotAddUpAreRefusedNamingTheOption) {
    for (int world : {4, 6}) {
        try {
            (void)place_clients(job_with({1, 2, 2}), world);
            FAIL() << "accepted 5 ranks of clients on " << world;
        } catch (const ConfigError& e) {
            const std::string what = e.what();
            EXPECT_NE(what.find("jobs/x.ini: option 'client.1.ranks_per_client'"), std::string::npos) << what;
            EXPECT_NE(what.find("add up to 5 ranks but the run has " + std::to_string(world)), std::string::npos) << what;
        }
    }
}
