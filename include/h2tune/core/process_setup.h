// Process-wide settings that must come before LibTorch does any work; shared by `h2tune` and the
// benchmarks so that both measure the same process.
#pragma once

#include <cstdint>

namespace h2tune {

// OpenMP threads that busy-wait between LibTorch operations steal the cores from each other and
// from other ranks (measured ~10x slower training on 2 cores). libgomp reads OMP_WAIT_POLICY only
// when the process starts, so when the user has not chosen a policy this sets it and re-executes
// the program once. H2TUNE_NO_REEXEC=1 disables this. Returns only when no re-exec happened.
void ensure_passive_openmp(char** argv);

// glibc otherwise mmaps every large tensor and unmaps it on free, so each training step pays page
// faults for its activations again; measured 3.5x slower on a small model.
void tune_allocator();

// Debian's LibTorch calls the system BLAS for fp32 matmuls, and OpenBLAS (pthreads build) keeps
// its own pool of one thread per core that torch::set_num_threads does not resize. Under MPI with
// several ranks per node every rank then runs that many BLAS threads, which spin between calls
// (measured: 3 ranks on 2 cores, 12% longer runs). Gives OpenBLAS `threads` threads, like
// LibTorch's own pool, unless the user set OPENBLAS_NUM_THREADS; no-op for another BLAS.
void match_blas_threads(int threads);

// Resizes OpenBLAS's pool unconditionally; false when the BLAS in the process is not OpenBLAS.
bool set_blas_threads(int threads);

// The cores this process may run on (its CPU affinity mask); 0 when the system does not say.
// Open MPI binds each rank to one core when it starts one or two ranks, so a rank given several
// threads may still have only one core (measured: 1 rank, 2 threads, 135 M client: 28.8 s bound,
// 18.7 s with --bind-to none).
int usable_cores();

// Resident memory of this process in bytes (VmRSS) and its peak (VmHWM), from /proc/self/status;
// -1 where the system does not provide them. reset_peak_resident_memory() sets the peak to the
// current resident set (Linux >= 4.0: /proc/self/clear_refs), so that a later peak measures what
// came after; false where that is not possible.
int64_t resident_memory_bytes();
int64_t peak_resident_memory_bytes();
bool reset_peak_resident_memory();

}  // namespace h2tune
