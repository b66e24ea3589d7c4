// Data-parallel training of one client over a group of ranks: every member takes its share of
// the rows of the same batch, weights its loss by its share of the batch's response rows, and the
// members' gradients are summed before any optimiser steps. The weighted sum is the gradient of
// the whole batch's mean loss, so a group computes what one rank computes on the whole batch (up
// to float summation order). This header is the training side only: how the sum travels (MPI,
// NCCL) lives behind GradientSync, implemented outside train/.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "h2tune/data/loader.h"

namespace h2tune {

class GradientSync {
public:
    virtual ~GradientSync() = default;
    // Replaces every parameter's gradient by the sum of the members' gradients (a gradient a member
    // did not define counts as zero; one no member defined stays undefined) and every element of
    // `scalars` by its sum over the members. Every member ends with identical values; all members
    // call it with the same parameters in the same order.
    virtual void sum(const std::vector<torch::Tensor>& parameters, std::vector<double>& scalars) = 0;
    // A stop request rides along with every sum: true on every member once any member had one
    // when a sum began, so that the whole group ends its round after the same step.
    virtual bool stop_requested() const = 0;
};

// A member's share of a batch of `rows` sequences: rows [begin, end), contiguous in member order;
// the first rows % members members take one row more. Empty when there are fewer rows than members.
struct RowShare {
    int64_t begin = 0, end = 0;
};
RowShare row_share(int64_t rows, int member, int members);

// Positions whose next-token label is kept (the rows of response_rows), in labels [B, T].
int64_t count_response_rows(const torch::Tensor& labels);

// The member's part of `batch` and the weight of its mean loss in the batch's mean loss: its
// response rows over the batch's. `empty` when the part holds no response row (weight 0).
struct BatchPart {
    Batch batch;
    double weight = 1.0;
    bool empty = false;
};
BatchPart batch_part(const Batch& batch, int member, int members);

}  // namespace h2tune
