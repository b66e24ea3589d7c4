// Activation checkpointing of one block (a decoder layer): the forward keeps only the block's
// input, and the backward recomputes the block's activations from it before differentiating them,
// trading one extra forward per block for not holding every intermediate tensor of the step.
//
// The "reentrant" form: a custom autograd function runs the block without recording a graph, saves
// its input and non-differentiable constants, and in its backward runs the block again with grad
// enabled and differentiates the recomputed output (torch::autograd::grad) with the incoming
// gradient. Autograd can only route gradients to tensors that are inputs of that function, so the
// block must name every tensor requiring grad it reads besides x (its trainable parameters, its
// adapters' tensors, middle matrices computed outside it); the function takes them as inputs and
// returns their gradients. A tensor it reads but does not name would silently get no gradient.
//
// Assumes the block is deterministic: no dropout or other random draw (the decoder has none), so
// the recomputation reproduces the forward bit for bit. Double backward (create_graph) is not
// supported. Heavy autograd headers stay in block_checkpoint.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <torch/types.h>

namespace h2tune {

struct CheckpointedBlock {
    // The block on input x with the non-differentiable `constants` given to checkpoint_block
    // (masks, rotary tables; undefined entries allowed). Called once in the forward and once more
    // in the backward; it must compute the same function both times.
    std::function<torch::Tensor(const torch::Tensor& x, const std::vector<torch::Tensor>& constants)> run;
    // Every tensor the block reads besides x that may require grad. Entries that are undefined or
    // do not require grad are ignored, duplicates are counted once. Called in the forward and again
    // in the backward, where it must name the same tensors (else the backward throws ModelError:
    // the recomputation would not be the forward that was differentiated).
    std::function<std::vector<torch::Tensor>()> differentiable_tensors;
};

// block.run(x, constants), keeping only x and `constants` for the backward. Runs the block plainly
// (recording its graph as usual) when grad mode is off or when neither x nor any of the block's
// differentiable tensors requires grad; the result is the same either way.
torch::Tensor checkpoint_block(const CheckpointedBlock& block, const torch::Tensor& x,
                               const std::vector<torch::Tensor>& constants);

// Process-wide counts, for tests and diagnostics: blocks run through the checkpoint (forwards) and
// recomputed in a backward (recomputations).
struct BlockCheckpointCounts {
    int64_t forwards = 0;
    int64_t recomputations = 0;
};
BlockCheckpointCounts block_checkpoint_counts();

}  // namespace h2tune
