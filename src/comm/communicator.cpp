#include "h2tune/comm/communicator.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <limits>
#include <thread>

#include "h2tune/core/error.h"

namespace h2tune {

namespace {
MPI_Comm& as_comm(void*& handle) { return *reinterpret_cast<MPI_Comm*>(&handle); }
MPI_Comm as_comm(void* const& handle) { return *reinterpret_cast<MPI_Comm const*>(&handle); }
static_assert(sizeof(MPI_Comm) <= sizeof(void*), "MPI_Comm must fit in a pointer-sized handle");

// Blocks until a message from `source` with `tag` is waiting. A blocking MPI_Probe/MPI_Recv
// busy-polls inside Open MPI at full speed; a rank that waits for the slowest client of a round
// (seconds) then takes a core away from the ranks still training whenever ranks share cores
// (oversubscribed workstations, more clients than cores). So: poll for a few microseconds (fast
// replies stay fast), then sleep between polls with a backoff capped at 1 ms, a delay that no
// round of local training notices.
void wait_for_message(MPI_Comm comm, int source, int tag, MPI_Status& status) {
    constexpr int kSpinPolls = 64;
    auto pause = std::chrono::microseconds(20);
    for (int polls = 0;; ++polls) {
        int waiting = 0;
        mpi_check(MPI_Iprobe(source, tag, comm, &waiting, &status), "MPI_Iprobe");
        if (waiting) return;
        if (polls < kSpinPolls) continue;
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
}

int checked_count(size_t n) {
    if (n > static_cast<size_t>(std::numeric_limits<int>::max()))
        throw CommError("MPI message of " + std::to_string(n) + " bytes exceeds the 2 GiB count limit");
    return static_cast<int>(n);
}
}  // namespace

void mpi_check(int code, const char* call) {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) len = 0;
    throw CommError(std::string(call) + " failed: " + std::string(text, static_cast<size_t>(len)));
}

MpiSession::MpiSession(int* argc, char*** argv) {
    if (active()) return;
    int provided = 0;
    mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    // Errors must come back as codes so that they become exceptions with a reason.
    mpi_check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
}

MpiSession::~MpiSession() {
    // Unwinding an error: MPI_Finalize would wait for ranks that may never get there. Leave MPI
    // up so that main can report the error and MPI_Abort the whole job.
    if (std::uncaught_exceptions() > 0) return;
    if (active()) MPI_Finalize();
}

bool MpiSession::active() {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    return initialized && !finalized;
}

Communicator::Communicator() {
    if (!MpiSession::active()) throw CommError("MPI is not initialised");
    MPI_Comm world = MPI_COMM_NULL;
    mpi_check(MPI_Comm_dup(MPI_COMM_WORLD, &world), "MPI_Comm_dup");
    as_comm(world_) = world;
    describe();
}

Communicator::Communicator(void* adopted) : world_(adopted) { describe(); }

void Communicator::describe() {
    MPI_Comm world = as_comm(world_), node = MPI_COMM_NULL;
    mpi_check(MPI_Comm_set_errhandler(world, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    mpi_check(MPI_Comm_rank(world, &rank_), "MPI_Comm_rank");
    mpi_check(MPI_Comm_size(world, &size_), "MPI_Comm_size");
    mpi_check(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node), "MPI_Comm_split_type");
    as_comm(node_) = node;
    mpi_check(MPI_Comm_rank(node, &local_rank_), "MPI_Comm_rank");
    mpi_check(MPI_Comm_size(node, &local_size_), "MPI_Comm_size");
}

struct Communicator::Posted {
    Bytes payload;
    MPI_Request request = MPI_REQUEST_NULL;
};

Communicator::~Communicator() {
    if (!MpiSession::active()) return;
    if (std::uncaught_exceptions() == 0) {
        try {
            complete_posted();
        } catch (...) {
            // Destructors do not throw; the job is ending either way.
        }
    }
    MPI_Comm node = as_comm(node_), world = as_comm(world_);
    if (node != MPI_COMM_NULL) MPI_Comm_free(&node);
    if (world != MPI_COMM_NULL) MPI_Comm_free(&world);
}

std::unique_ptr<Communicator> Communicator::split(int color) const {
    MPI_Comm part = MPI_COMM_NULL;
    mpi_check(MPI_Comm_split(as_comm(world_), color, rank_, &part), "MPI_Comm_split");
    void* handle = nullptr;
    as_comm(handle) = part;
    return std::unique_ptr<Communicator>(new Communicator(handle));
}

void Communicator::barrier() {
    complete_posted();
    mpi_check(MPI_Barrier(as_comm(world_)), "MPI_Barrier");
}

void Communicator::post(Bytes payload, int dest, int tag) {
    auto p = std::make_unique<Posted>();
    p->payload = std::move(payload);
    mpi_check(MPI_Isend(p->payload.data(), checked_count(p->payload.size()), MPI_BYTE, dest, tag, as_comm(world_),
                        &p->request),
              "MPI_Isend");
    posted_.push_back(std::move(p));
    // Drop the sends that have completed so a long run does not accumulate buffers.
    for (auto it = posted_.begin(); it != posted_.end();) {
        int done = 0;
        mpi_check(MPI_Test(&(*it)->request, &done, MPI_STATUS_IGNORE), "MPI_Test");
        it = done ? posted_.erase(it) : it + 1;
    }
}

void Communicator::complete_posted() {
    for (auto& p : posted_) mpi_check(MPI_Wait(&p->request, MPI_STATUS_IGNORE), "MPI_Wait");
    posted_.clear();
}

namespace {
Bytes receive_probed(MPI_Comm comm, MPI_Status& status) {
    int count = 0;
    mpi_check(MPI_Get_count(&status, MPI_BYTE, &count), "MPI_Get_count");
    Bytes out(static_cast<size_t>(count));
    mpi_check(MPI_Recv(out.data(), count, MPI_BYTE, status.MPI_SOURCE, status.MPI_TAG, comm, MPI_STATUS_IGNORE),
              "MPI_Recv");
    return out;
}
}  // namespace

Bytes Communicator::receive(int source, int tag) const {
    MPI_Status status;
    wait_for_message(as_comm(world_), source, tag, status);
    return receive_probed(as_comm(world_), status);
}

bool Communicator::try_receive(int source, int tag, Bytes& out) const {
    MPI_Status status;
    int waiting = 0;
    mpi_check(MPI_Iprobe(source, tag, as_comm(world_), &waiting, &status), "MPI_Iprobe");
    if (!waiting) return false;
    out = receive_probed(as_comm(world_), status);
    return true;
}

void Communicator::send(const Bytes& payload, int dest, int tag) const {
    uint64_t n = payload.size();
    mpi_check(MPI_Send(&n, 1, MPI_UINT64_T, dest, tag, as_comm(world_)), "MPI_Send(size)");
    if (n > 0)
        mpi_check(MPI_Send(payload.data(), checked_count(n), MPI_BYTE, dest, tag, as_comm(world_)), "MPI_Send");
}

Bytes Communicator::recv(int source, int tag) const {
    uint64_t n = 0;
    MPI_Status status;
    wait_for_message(as_comm(world_), source, tag, status);
    mpi_check(MPI_Recv(&n, 1, MPI_UINT64_T, status.MPI_SOURCE, tag, as_comm(world_), MPI_STATUS_IGNORE),
              "MPI_Recv(size)");
    Bytes out(n);
    if (n > 0)
        mpi_check(MPI_Recv(out.data(), checked_count(n), MPI_BYTE, status.MPI_SOURCE, tag, as_comm(world_),
                           MPI_STATUS_IGNORE),
                  "MPI_Recv");
    return out;
}

void Communicator::broadcast(Bytes& payload, int root) const {
    uint64_t n = payload.size();
    mpi_check(MPI_Bcast(&n, 1, MPI_UINT64_T, root, as_comm(world_)), "MPI_Bcast(size)");
    payload.resize(n);
    if (n > 0) mpi_check(MPI_Bcast(payload.data(), checked_count(n), MPI_BYTE, root, as_comm(world_)), "MPI_Bcast");
}

std::vector<Bytes> Communicator::gather(const Bytes& payload, int root) const {
    int n = checked_count(payload.size());
    std::vector<int> sizes(rank_ == root ? static_cast<size_t>(size_) : 0);
    mpi_check(MPI_Gather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, root, as_comm(world_)), "MPI_Gather(sizes)");
    std::vector<int> displs;
    Bytes all;
    if (rank_ == root) {
        displs.resize(static_cast<size_t>(size_));
        size_t total = 0;
        for (int r = 0; r < size_; ++r) {
            displs[static_cast<size_t>(r)] = checked_count(total);
            total += static_cast<size_t>(sizes[static_cast<size_t>(r)]);
        }
        all.resize(total);
    }
    mpi_check(MPI_Gatherv(payload.data(), n, MPI_BYTE, all.data(), sizes.data(), displs.data(), MPI_BYTE, root,
                          as_comm(world_)),
              "MPI_Gatherv");
    std::vector<Bytes> out;
    if (rank_ == root)
        for (int r = 0; r < size_; ++r) {
            auto b = all.begin() + displs[static_cast<size_t>(r)];
            out.emplace_back(b, b + sizes[static_cast<size_t>(r)]);
        }
    return out;
}

double Communicator::allreduce_sum(double value) const {
    double out = 0;
    mpi_check(MPI_Allreduce(&value, &out, 1, MPI_DOUBLE, MPI_SUM, as_comm(world_)), "MPI_Allreduce");
    return out;
}

double Communicator::allreduce_max(double value) const {
    double out = 0;
    mpi_check(MPI_Allreduce(&value, &out, 1, MPI_DOUBLE, MPI_MAX, as_comm(world_)), "MPI_Allreduce");
    return out;
}

int64_t Communicator::allreduce_sum(int64_t value) const {
    int64_t out = 0;
    mpi_check(MPI_Allreduce(&value, &out, 1, MPI_INT64_T, MPI_SUM, as_comm(world_)), "MPI_Allreduce");
    return out;
}

void Communicator::allreduce_sum(std::vector<float>& values) const {
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, values.data(), checked_count(values.size()), MPI_FLOAT, MPI_SUM,
                            as_comm(world_)),
              "MPI_Allreduce");
}

std::vector<float> Communicator::allgather(const std::vector<float>& values) const {
    const int n = checked_count(values.size());
    std::vector<int> counts(static_cast<size_t>(size_));
    mpi_check(MPI_Allgather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, as_comm(world_)), "MPI_Allgather(counts)");
    for (int r = 0; r < size_; ++r)
        if (counts[static_cast<size_t>(r)] != n)
            throw CommError("MPI_Allgather: rank " + std::to_string(r) + " contributes " +
                            std::to_string(counts[static_cast<size_t>(r)]) + " values, rank " + std::to_string(rank_) +
                            " " + std::to_string(n) + " (the ranks disagree on what they exchange)");
    std::vector<float> all(values.size() * static_cast<size_t>(size_));
    mpi_check(MPI_Allgather(values.data(), n, MPI_FLOAT, all.data(), n, MPI_FLOAT, as_comm(world_)), "MPI_Allgather");
    return all;
}

void Communicator::abort(int code) const { MPI_Abort(as_comm(world_), code); }

}  // namespace h2tune
