// Preemption signals for `h2tune train`. SLURM sends SIGUSR1 (--signal) or SIGTERM before it
// kills a job, a user at a terminal SIGINT (Ctrl-C): the first one asks every rank to finish the step in flight, write a checkpoint and
// exit with kExitPreempted; a second one exits at once (128 + signal number), without one.
#pragma once

#include <csignal>
#include <string>

namespace h2tune {

void install_stop_handlers();
const volatile std::sig_atomic_t* stop_flag();
bool stop_requested();

// Test hook: H2TUNE_RAISE_SIGNAL="SIG:CLIENT:ROUND:STEP" (SIG = USR1, TERM, INT or KILL) makes the rank
// hosting CLIENT raise SIG on itself once that client has finished step STEP (1-based) of ROUND.
struct RaiseSignalHook {
    int signal = 0, client = -1, round = -1;
    long long step = -1;
    static RaiseSignalHook from_environment();
    bool active() const { return signal != 0; }
};

}  // namespace h2tune
