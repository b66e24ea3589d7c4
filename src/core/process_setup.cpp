#include "h2tune/core/process_setup.h"

#include <dlfcn.h>
#include <malloc.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace h2tune {

void ensure_passive_openmp(char** argv) {
    if (std::getenv("OMP_WAIT_POLICY") || std::getenv("H2TUNE_NO_REEXEC")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    // Exec the resolved path (not /proc/self/exe) so that ps and top still show the program's name.
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) return;
    self[n] = '\0';
    execv(self, argv);
    // execv only returns on failure; carry on with the active policy.
}

void tune_allocator() {
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

bool set_blas_threads(int threads) {
    using SetThreads = void (*)(int);
    // Looked up at run time: the BLAS is whatever libblas.so.3 the system resolves to.
    const auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    if (set) set(threads);
    return set != nullptr;
}

void match_blas_threads(int threads) {
    if (threads < 1 || std::getenv("OPENBLAS_NUM_THREADS")) return;
    (void)set_blas_threads(threads);
}

int usable_cores() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    return CPU_COUNT(&set);
}

namespace {
// A field of /proc/self/status in KiB ("VmRSS", "VmHWM"); -1 when unavailable.
int64_t status_kib(const char* field) {
    std::ifstream in("/proc/self/status");
    std::string line;
    const std::string prefix = std::string(field) + ":";
    while (std::getline(in, line))
        if (line.compare(0, prefix.size(), prefix) == 0) return std::stoll(line.substr(prefix.size()));
    return -1;
}
}  // namespace

int64_t resident_memory_bytes() {
    const int64_t kib = status_kib("VmRSS");
    return kib < 0 ? -1 : kib * 1024;
}

int64_t peak_resident_memory_bytes() {
    const int64_t kib = status_kib("VmHWM");
    return kib < 0 ? -1 : kib * 1024;
}

bool reset_peak_resident_memory() {
    std::ofstream out("/proc/self/clear_refs");
    out << "5";
    return static_cast<bool>(out.flush());
}

}  // namespace h2tune
