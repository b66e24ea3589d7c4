#include "h2tune/app/client_placement.h"

#include "h2tune/core/error.h"

namespace h2tune {

std::vector<RankGroup> place_clients(const JobConfig& job, int world_size) {
    if (world_size < 1) throw ConfigError("place_clients: no ranks");
    const size_t K = job.clients.size();
    std::vector<RankGroup> placement(K);
    int64_t total = 0;
    bool grouped = false;
    for (const auto& c : job.clients) {
        total += c.ranks_per_client;
        grouped = grouped || c.ranks_per_client > 1;
    }
    if (!grouped) {
        for (size_t k = 0; k < K; ++k) placement[k].first = static_cast<int>(k % static_cast<size_t>(world_size));
        return placement;
    }
    if (total != world_size) {
        size_t widest = 0;
        for (size_t k = 0; k < K; ++k)
            if (job.clients[k].ranks_per_client > job.clients[widest].ranks_per_client) widest = k;
        const std::string src = job.source.empty() ? "job" : job.source;
        throw ConfigError(src + ": option 'client." + std::to_string(widest) +
                          ".ranks_per_client': the clients' ranks_per_client add up to " +
                          std::to_string(total) + " ranks but the run has " + std::to_string(world_size) +
                          " (a client spanning several ranks gets ranks of its own: start " + std::to_string(total) +
                          " ranks, e.g. mpirun -n " + std::to_string(total) + " or srun --ntasks=" + std::to_string(total) +
                          ", or change ranks_per_client)");
    }
    int next = 0;
    for (size_t k = 0; k < K; ++k) {
        placement[k].first = next;
        placement[k].size = static_cast<int>(job.clients[k].ranks_per_client);
        next += placement[k].size;
    }
    return placement;
}

bool has_rank_groups(const std::vector<RankGroup>& placement) {
    for (const auto& g : placement)
        if (g.size > 1) return true;
    return false;
}

}  // namespace h2tune
