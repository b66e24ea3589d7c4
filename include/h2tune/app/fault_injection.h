// Test hook: H2TUNE_INJECT_FAULT="KIND:CLIENT:ROUND" corrupts that client's upload in that round,
// with KIND nan (a NaN value), explode (values scaled by 1e8), truncate (the encoded record cut
// short), rank (claims rank r^2 + 1) or index (announces a mask index past R*R; ROUND is
// ignored), or stall (the client's rank sleeps H2TUNE_STALL_SECONDS, default 5, after training);
// version:RANK:ROUND makes rank RANK's round report claim another protocol version (the run must
// stop with exit code 1, naming the message).
// Used by the MPI tests of exclusion. Every corruption is applied at one seam: to a record after
// it is built and before it is encoded (truncate: to its encoded bytes), never inside the codec.
#pragma once

#include <string>

#include "h2tune/app/round_messages.h"

namespace h2tune {

struct FaultInjection {
    std::string kind;
    int client = -1, round = -1;
    double stall_seconds = 0;

    static FaultInjection from_environment();
    bool hits(int client, int round) const;
    // The stall to sleep after `client` trained in `round` (0: none).
    double stall_after_training(int client, int round) const;
    void corrupt(MaskAnnouncement& announcement, int64_t max_rank) const;
    void corrupt(UploadRecord& record, int round) const;
    void corrupt_encoded(Bytes& record, int client, int round) const;
    void corrupt_report(Bytes& message, int rank, int round) const;
};

}  // namespace h2tune
