#include "h2tune/app/stop_signal.h"

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "h2tune/core/error.h"

namespace h2tune {

namespace {
volatile std::sig_atomic_t g_stop = 0;

extern "C" void on_stop_signal(int sig) {
    if (g_stop) _exit(128 + sig);  // second signal: no checkpoint, leave now
    g_stop = sig;
}
}  // namespace

void install_stop_handlers() {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // MPI and file calls in flight continue; the flag is polled between steps
    // Ctrl-C (SIGINT) is a stop request like SLURM's: the same in-round checkpoint, exit code 3.
    for (int sig : {SIGUSR1, SIGTERM, SIGINT})
        if (sigaction(sig, &sa, nullptr) != 0) throw Error("cannot install the handler for signal " + std::to_string(sig));
    // A closed stdout (`train ... | head`) must not kill the job between a round's metrics row and
    // its checkpoint: writes to it fail with EPIPE instead, and the run goes on.
    if (std::signal(SIGPIPE, SIG_IGN) == SIG_ERR) throw Error("cannot ignore SIGPIPE");
}

const volatile std::sig_atomic_t* stop_flag() { return &g_stop; }
bool stop_requested() { return g_stop != 0; }

RaiseSignalHook RaiseSignalHook::from_environment() {
    RaiseSignalHook h;
    const char* spec = std::getenv("H2TUNE_RAISE_SIGNAL");
    if (!spec || !*spec) return h;
    const std::string s = spec;
    const auto a = s.find(':'), b = s.find(':', a + 1), c = s.find(':', b + 1);
    if (a == std::string::npos || b == std::string::npos || c == std::string::npos)
        throw ConfigError("H2TUNE_RAISE_SIGNAL: expected SIG:CLIENT:ROUND:STEP, got '" + s + "'");
    const std::string name = s.substr(0, a);
    h.signal = name == "USR1" ? SIGUSR1 : name == "TERM" ? SIGTERM : name == "INT" ? SIGINT : name == "KILL" ? SIGKILL : 0;
    if (!h.signal) throw ConfigError("H2TUNE_RAISE_SIGNAL: signal must be USR1, TERM, INT or KILL, got '" + name + "'");
    h.client = std::stoi(s.substr(a + 1, b - a - 1));
    h.round = std::stoi(s.substr(b + 1, c - b - 1));
    h.step = std::stoll(s.substr(c + 1));
    return h;
}

}  // namespace h2tune
