// MPI for h2tune: a private duplicate of MPI_COMM_WORLD (so library calls never collide with a
// user's or another library's messages), node-local ranks for device selection, and byte-buffer
// messages whose sizes travel first. Knows MPI, nothing about LoRA.
#pragma once

#include <cstdint>
#include <string>
#include <memory>
#include <vector>

namespace h2tune {

// Throws CommError naming the call and MPI's error string when `code` is not MPI_SUCCESS.
void mpi_check(int code, const char* call);

// Initialises MPI (thread level FUNNELED: only the main thread calls MPI) and finalises it.
class MpiSession {
public:
    MpiSession(int* argc, char*** argv);
    ~MpiSession();
    MpiSession(const MpiSession&) = delete;
    MpiSession& operator=(const MpiSession&) = delete;
    static bool active();  // initialised and not finalised
};

using Bytes = std::vector<uint8_t>;

class Communicator {
public:
    // Duplicates MPI_COMM_WORLD; also splits by shared-memory node for local rank and size.
    Communicator();
    // Collective: the ranks that pass the same `color` form one communicator, ranked in this
    // communicator's order (a client's data-parallel group).
    std::unique_ptr<Communicator> split(int color) const;
    ~Communicator();
    Communicator(const Communicator&) = delete;
    Communicator& operator=(const Communicator&) = delete;

    int rank() const { return rank_; }
    int size() const { return size_; }
    int local_rank() const { return local_rank_; }  // rank among the processes on this node
    int local_size() const { return local_size_; }

    void barrier();
    void send(const Bytes& payload, int dest, int tag) const;  // size first, then the bytes
    Bytes recv(int source, int tag) const;
    void broadcast(Bytes& payload, int root) const;
    // Every rank contributes one buffer; root receives all of them in rank order.
    std::vector<Bytes> gather(const Bytes& payload, int root) const;
    double allreduce_sum(double value) const;
    double allreduce_max(double value) const;
    int64_t allreduce_sum(int64_t value) const;
    void allreduce_sum(std::vector<float>& values) const;  // fixed order: MPI reduction, same ranks
    // Every rank's `values` (the same count on every rank: checked), concatenated in rank order
    // on every rank. Callers that sum the parts themselves get one order on every rank.
    std::vector<float> allgather(const std::vector<float>& values) const;
    void abort(int code) const;

    // Single-message point-to-point exchange for protocols with deadlines: post() sends without
    // waiting (the buffer is kept until the send completes; complete_posted() waits for all of
    // them, as do barrier() and the destructor), receive() blocks for the next message from
    // `source` with `tag` whatever its size, try_receive() returns false at once when none waits.
    void post(Bytes payload, int dest, int tag);
    void complete_posted();
    Bytes receive(int source, int tag) const;
    bool try_receive(int source, int tag, Bytes& out) const;

private:
    explicit Communicator(void* adopted);  // takes ownership of an MPI_Comm
    void describe();                        // rank, size and the node-local split of world_
    struct Posted;
    std::vector<std::unique_ptr<Posted>> posted_;
    void* world_ = nullptr;  // MPI_Comm, kept opaque so this header does not pull in mpi.h
    void* node_ = nullptr;
    int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
};

}  // namespace h2tune
