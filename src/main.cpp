// Thin entry point: allocator settings, then the CLI; every error is caught here once.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <new>

#include "h2tune/app/cli.h"
#include "h2tune/core/error.h"
#include "h2tune/core/process_setup.h"

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

int main(int argc, char** argv) {
    h2tune::ensure_passive_openmp(argv);
    h2tune::tune_allocator();

    try {
        return h2tune::cli_main(argc, argv);
    } catch (const h2tune::ConfigError& e) {
        return fail("error", e.what(), h2tune::kExitUsage);
    } catch (const h2tune::DataError& e) {
        return fail("error", e.what(), h2tune::kExitUsage);
    } catch (const h2tune::Error& e) {
        return fail("error", e.what(), h2tune::kExitFailure);
    } catch (const std::filesystem::filesystem_error& e) {
        // The standard library's message names the operation, the reason and the path(s).
        return fail("error", e.what(), h2tune::kExitFailure);
    } catch (const std::bad_alloc&) {
        return fail("error", "out of memory (a model, batch or data file larger than this node can hold?)",
                    h2tune::kExitFailure);
    } catch (const std::exception& e) {
        return fail("internal error", e.what(), h2tune::kExitFailure);
    }
}
