// Thin entry point: allocator settings, then the CLI; every error is caught here once.
#include <malloc.h>
#include <mpi.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "h2tune/app/cli.h"
#include "h2tune/core/error.h"

namespace {

int world_rank_or_minus_one() {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (!initialized || finalized) return -1;
    int rank = 0;
    if (MPI_Comm_rank(MPI_COMM_WORLD, &rank) != MPI_SUCCESS) return -1;
    return rank;
}

// Ends the whole MPI job when other ranks may be waiting on this one; otherwise returns the code.
int fail(const char* kind, const char* what, int code) {
    const int rank = world_rank_or_minus_one();
    if (rank >= 0)
        std::fprintf(stderr, "h2tune: %s (rank %d): %s\n", kind, rank, what);
    else
        std::fprintf(stderr, "h2tune: %s: %s\n", kind, what);
    std::fflush(stderr);
    if (rank >= 0) {
        int size = 1;
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        if (size > 1) MPI_Abort(MPI_COMM_WORLD, code);
        MPI_Finalize();
    }
    return code;
}

}  // namespace

// OpenMP threads that busy-wait between LibTorch operations steal the cores from each other and
// from other ranks (measured ~10x slower training on 2 cores). libgomp reads OMP_WAIT_POLICY only
// when the process starts, so when the user has not chosen a policy we set it and re-execute
// ourselves once. H2TUNE_NO_REEXEC=1 disables this.
void ensure_passive_openmp(char** argv) {
    if (std::getenv("OMP_WAIT_POLICY") || std::getenv("H2TUNE_NO_REEXEC")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    // Exec the resolved path (not /proc/self/exe) so that ps and top still show "h2tune".
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) return;
    self[n] = '\0';
    execv(self, argv);
    // execv only returns on failure; carry on with the active policy.
}

int main(int argc, char** argv) {
    ensure_passive_openmp(argv);
    // glibc otherwise mmaps every large tensor and unmaps it on free, so each training step pays
    // page faults for its activations again; measured 3.5x slower on a small model.
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);

    try {
        return h2tune::cli_main(argc, argv);
    } catch (const h2tune::ConfigError& e) {
        return fail("error", e.what(), h2tune::kExitUsage);
    } catch (const h2tune::DataError& e) {
        return fail("error", e.what(), h2tune::kExitUsage);
    } catch (const h2tune::Error& e) {
        return fail("error", e.what(), h2tune::kExitFailure);
    } catch (const std::exception& e) {
        return fail("internal error", e.what(), h2tune::kExitFailure);
    }
}
