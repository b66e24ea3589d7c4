// Which ranks host which client. With one rank per client (the default), clients are spread
// round-robin: client k on rank k mod size, so a few ranks can simulate hundreds of clients.
// When any client spans several ranks (client.N.ranks_per_client), every client gets its own
// contiguous ranks in client order (client 0 first, so rank 0 leads it), and the clients' ranks
// must add up to the run's: a rank then hosts one client, as its group's leader or as a follower.
// Pure: no MPI.
#pragma once

#include <string>
#include <vector>

#include "h2tune/core/job_config.h"

namespace h2tune {

struct RankGroup {
    int first = 0;  // the leader: the rank that talks to rank 0 for the federation
    int size = 1;   // ranks [first, first + size)
    bool contains(int rank) const { return rank >= first && rank < first + size; }
};

// Throws ConfigError naming the option when the ranks do not add up.
std::vector<RankGroup> place_clients(const JobConfig& job, int world_size);
// Whether any client spans several ranks.
bool has_rank_groups(const std::vector<RankGroup>& placement);

}  // namespace h2tune
