#include "h2tune/model/block_checkpoint.h"

#include <atomic>
#include <cstddef>
#include <string>
#include <unordered_set>
#include <utility>

#include <ATen/core/ivalue.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include "h2tune/core/error.h"

namespace h2tune {

namespace {

std::atomic<int64_t> g_forwards{0};
std::atomic<int64_t> g_recomputations{0};

// The block's differentiable tensors that require grad, each once (a middle matrix shared by
// several projections would otherwise get its gradient returned, and accumulated, twice).
std::vector<torch::Tensor> differentiable_inputs(const CheckpointedBlock& block) {
    std::vector<torch::Tensor> out;
    if (!block.differentiable_tensors) return out;
    std::unordered_set<const c10::TensorImpl*> seen;
    for (torch::Tensor& t : block.differentiable_tensors())
        if (t.defined() && t.requires_grad() && seen.insert(t.unsafeGetTensorImpl()).second) out.push_back(std::move(t));
    return out;
}

// What the backward needs besides saved tensors: the block itself. ctx->saved_data holds IValues
// only; a capsule (IValue::make_capsule, present in LibTorch 1.13 and 2.x) carries an arbitrary
// CustomClassHolder without registering a TorchScript class.
struct BlockRecompute : torch::CustomClassHolder {
    explicit BlockRecompute(CheckpointedBlock b) : block(std::move(b)) {}
    CheckpointedBlock block;
};

// apply(recompute, &constants, x, parameters): the variable inputs are x and every parameter (a
// TensorList counts as one input per element), so backward returns one gradient for each and
// undefined ones for the two non-tensor arguments. The constants travel by pointer, which autograd
// does not mistake for tensor inputs, and are saved with save_for_backward (with x and the
// parameters) so that an in-place change to any of them before the backward is reported by
// autograd's version check instead of silently recomputing something else.
class BlockCheckpointFunction : public torch::autograd::Function<BlockCheckpointFunction> {
public:
    static torch::Tensor forward(torch::autograd::AutogradContext* ctx,
                                 const c10::intrusive_ptr<BlockRecompute>& recompute,
                                 const std::vector<torch::Tensor>* constants, const torch::Tensor& x,
                                 torch::TensorList parameters) {
        ctx->saved_data["block"] = c10::IValue::make_capsule(recompute);
        ctx->saved_data["constants"] = static_cast<int64_t>(constants->size());
        std::vector<torch::Tensor> to_save;
        to_save.reserve(1 + constants->size() + parameters.size());
        to_save.push_back(x);
        to_save.insert(to_save.end(), constants->begin(), constants->end());
        to_save.insert(to_save.end(), parameters.begin(), parameters.end());
        ctx->save_for_backward(std::move(to_save));
        ++g_forwards;
        // Function::apply already runs forward with grad mode off; the guard states it here.
        torch::NoGradGuard no_grad;
        return recompute->block.run(x, *constants);
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grad_outputs) {
        const auto recompute =
            c10::static_intrusive_pointer_cast<BlockRecompute>(ctx->saved_data.at("block").toCapsule());
        const auto num_constants = static_cast<size_t>(ctx->saved_data.at("constants").toInt());
        const torch::autograd::variable_list saved = ctx->get_saved_variables();
        const torch::Tensor& x = saved.at(0);
        const auto first_parameter = saved.begin() + 1 + static_cast<std::ptrdiff_t>(num_constants);
        const std::vector<torch::Tensor> constants(saved.begin() + 1, first_parameter);
        const std::vector<torch::Tensor> parameters(first_parameter, saved.end());

        // The recomputation reads the block's modules as they are now; it differentiates the
        // forward that ran only if they still hold the same tensors (an adapter swapped or a new
        // middle matrix set in between would give gradients of another function).
        const std::vector<torch::Tensor> now = differentiable_inputs(recompute->block);
        bool same = now.size() == parameters.size();
        for (size_t i = 0; same && i < now.size(); ++i) same = now[i].is_same(parameters[i]);
        if (!same)
            throw ModelError("activation checkpointing: the block's differentiable tensors changed between its forward (" +
                             std::to_string(parameters.size()) + " tensors) and its backward (" +
                             std::to_string(now.size()) +
                             "): an adapter or middle matrix was replaced before backward(); run the backward first");

        torch::AutoGradMode enable_grad(true);
        const bool x_grad = x.requires_grad();
        torch::Tensor x_detached = x.detach();
        if (x_grad) x_detached.requires_grad_(true);
        const torch::Tensor out = recompute->block.run(x_detached, constants);
        ++g_recomputations;

        torch::autograd::variable_list inputs;
        inputs.reserve(1 + parameters.size());
        if (x_grad) inputs.push_back(x_detached);
        inputs.insert(inputs.end(), parameters.begin(), parameters.end());
        const torch::autograd::variable_list grads =
            torch::autograd::grad({out}, inputs, {grad_outputs.at(0)}, /*retain_graph=*/false,
                                  /*create_graph=*/false, /*allow_unused=*/true);

        torch::autograd::variable_list result;
        result.reserve(3 + parameters.size());
        result.emplace_back();  // recompute
        result.emplace_back();  // constants
        result.push_back(x_grad ? grads[0] : torch::Tensor());
        result.insert(result.end(), grads.begin() + (x_grad ? 1 : 0), grads.end());
        return result;
    }
};

}  // namespace

torch::Tensor checkpoint_block(const CheckpointedBlock& block, const torch::Tensor& x,
                               const std::vector<torch::Tensor>& constants) {
    if (!block.run) throw ModelError("checkpoint_block: the block has no run function");
    if (!torch::GradMode::is_enabled()) return block.run(x, constants);
    const std::vector<torch::Tensor> parameters = differentiable_inputs(block);
    if (!x.requires_grad() && parameters.empty()) return block.run(x, constants);
    const auto recompute = c10::make_intrusive<BlockRecompute>(block);
    return BlockCheckpointFunction::apply(recompute, &constants, x, torch::TensorList(parameters));
}

BlockCheckpointCounts block_checkpoint_counts() {
    BlockCheckpointCounts c;
    c.forwards = g_forwards.load();
    c.recomputations = g_recomputations.load();
    return c;
}

}  // namespace h2tune
