// The CUDA path of a client, checked against the CPU and timed: exits 77 (CTest: skipped) where
// LibTorch has no CUDA device. For each built-in size: a randomly initialised model with adapters
// on all 7 projections and H2Tune's shared middle state, built on the CPU and copied to the GPU;
// the first training step's loss on both devices (TF32 off) must agree, an optimiser state saved
// on the GPU must restore there, cached label scoring must agree, and then it times training steps
// (batch 16 x 128 tokens) and prints tokens/s, also as JSON (first argument: output path).
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "h2tune/method/shared_middle.h"
#include "h2tune/model/llama.h"
#include "h2tune/model/llama_config.h"
#include "h2tune/train/adapted_model.h"
#include "h2tune/train/alternating.h"
#include "h2tune/train/evaluate.h"

using namespace h2tune;

namespace {

constexpr int kSkipped = 77;
const std::vector<std::string> kModules = {"q", "k", "v", "o", "gate", "up", "down"};

struct Client {
    AdaptedModel adapted;
    std::unique_ptr<SharedMiddle> shared;
    std::unique_ptr<AlternatingTrainer> trainer;
};

Client make_client(const LlamaConfig& config, torch::Device device) {
    torch::manual_seed(17);
    LlamaForCausalLM model(config);  // drawn on the CPU: the same weights on every device
    model->to(device);
    Client c;
    c.adapted = attach_adapters(model, kModules, 16, 16.0, 99, device);
    SharedMiddleOptions so;
    so.global_layers = config.num_hidden_layers;
    so.layers = config.num_hidden_layers;
    so.modules = static_cast<int64_t>(kModules.size());
    so.rank = 16;
    so.max_rank = 32;
    so.mask_key = 5;
    so.device = device;
    c.shared = std::make_unique<SharedMiddle>(so);
    torch::manual_seed(23);
    c.shared->begin_round(0.05 * torch::randn({so.global_layers, so.modules, 256}));
    {
        torch::NoGradGuard no_grad;
        torch::manual_seed(29);
        for (auto& a : c.adapted.adapters) a->lora_B.copy_(0.02 * torch::randn(a->lora_B.sizes()));
    }
    std::vector<int64_t> module_index;
    for (const auto& t : c.adapted.module_types)
        module_index.push_back(static_cast<int64_t>(std::find(kModules.begin(), kModules.end(), t) - kModules.begin()));
    AlternatingOptions opt;
    opt.specific.schedule.lr = opt.residual.schedule.lr = opt.relation.schedule.lr = 1e-3;
    opt.specific.schedule.total_steps = opt.residual.schedule.total_steps = opt.relation.schedule.total_steps = 100;
    c.trainer = std::make_unique<AlternatingTrainer>(c.adapted, c.shared.get(), module_index, opt);
    return c;
}

Batch make_batch(const LlamaConfig& config, torch::Device device) {
    torch::manual_seed(31);
    Batch b;
    b.input_ids = torch::randint(0, config.vocab_size, {16, 128}, torch::kInt64);
    b.attention_mask = torch::ones({16, 128}, torch::kInt64);
    b.labels = torch::full({16, 128}, kIgnoreIndex, torch::kInt64);
    b.labels.narrow(1, 96, 32).copy_(b.input_ids.narrow(1, 96, 32));
    b.tokens = 16 * 128;
    if (device.is_cuda()) b.labels_host = b.labels;  // as ClientRuntime does for a GPU batch
    b.input_ids = b.input_ids.to(device);
    b.attention_mask = b.attention_mask.to(device);
    b.labels = b.labels.to(device);
    return b;
}

}  // namespace

int main(int argc, char** argv) {
    if (!torch::cuda::is_available()) {
        std::printf("gpu_check: LibTorch sees no CUDA device; skipped\n");
        return kSkipped;
    }
    at::globalContext().setAllowTF32CuBLAS(false);  // compare in true fp32
    at::globalContext().setAllowTF32CuDNN(false);
    const torch::Device gpu(torch::kCUDA, 0);
    int failures = 0;
    std::string json = "{\"device\": \"cuda:0\", \"torch\": \"" + std::string(TORCH_VERSION) + "\", \"sizes\": [";
    std::printf("%-9s %12s %12s %10s %12s %10s\n", "size", "loss cpu", "loss gpu", "rel diff", "tokens/s", "ms/step");
    for (const auto& name : llama_preset_names()) {
        const LlamaConfig config = llama_preset(name, 4096);
        Client cpu = make_client(config, torch::kCPU), dev = make_client(config, gpu);
        const double loss_cpu = cpu.trainer->joint_step(make_batch(config, torch::kCPU));
        const double loss_gpu = dev.trainer->joint_step(make_batch(config, gpu));
        const double rel = std::abs(loss_cpu - loss_gpu) / std::abs(loss_cpu);
        if (!(rel < 1e-4)) {
            std::printf("gpu_check: %s: first-step loss differs between CPU and GPU (%.3e relative)\n", name.c_str(), rel);
            ++failures;
        }
        // Optimiser state saved from the GPU must restore onto the GPU and continue identically.
        const auto saved = dev.trainer->state();
        Client again = make_client(config, gpu);
        {
            torch::NoGradGuard no_grad;
            auto src = dev.adapted.adapter_parameters(), dst = again.adapted.adapter_parameters();
            for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
            again.shared->load_state(dev.shared->relation_logits().detach().cpu(), dev.shared->masks(),
                                     dev.shared->residual().detach().cpu(), dev.shared->received_slices().cpu());
        }
        again.trainer->load_state(saved);
        again.trainer->fix_middles();
        const Batch b2 = make_batch(config, gpu);
        const double next_a = dev.trainer->joint_step(b2), next_b = again.trainer->joint_step(b2);
        if (std::abs(next_a - next_b) > 1e-6 * std::abs(next_a)) {
            std::printf("gpu_check: %s: restored optimiser state continues differently (%.8f vs %.8f)\n", name.c_str(),
                        next_a, next_b);
            ++failures;
        }
        // Cached label scoring on the GPU against the CPU.
        cpu.trainer->fix_middles();
        dev.trainer->fix_middles();
        const std::vector<int32_t> prompt = {5, 17, 99, 230, 1001, 42};
        const std::vector<std::vector<int32_t>> labels = {{7, 8}, {300}, {12, 13, 14}};
        {
            // Bring the CPU copy to the GPU client's weights first.
            torch::NoGradGuard no_grad;
            auto src = dev.adapted.adapter_parameters(), dst = cpu.adapted.adapter_parameters();
            for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
        }
        cpu.shared->load_state(dev.shared->relation_logits().detach().cpu(), dev.shared->masks(),
                               dev.shared->residual().detach().cpu(), dev.shared->received_slices().cpu());
        cpu.trainer->fix_middles();
        const auto s_cpu = score_candidates(cpu.adapted.model, prompt, labels);
        const auto s_gpu = score_candidates(dev.adapted.model, prompt, labels);
        for (size_t i = 0; i < s_cpu.size(); ++i)
            if (std::abs(s_cpu[i] - s_gpu[i]) > 1e-3 * std::max(1.0, std::abs(s_cpu[i]))) {
                std::printf("gpu_check: %s: label %zu scores %.6f on the CPU, %.6f on the GPU\n", name.c_str(), i,
                            s_cpu[i], s_gpu[i]);
                ++failures;
            }
        // Throughput (TF32 allowed again: what a user gets by default).
        at::globalContext().setAllowTF32CuBLAS(true);
        const Batch b = make_batch(config, gpu);
        for (int i = 0; i < 3; ++i) dev.trainer->joint_step(b);
        torch::cuda::synchronize();
        const int steps = 20;
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < steps; ++i) dev.trainer->joint_step(b);
        torch::cuda::synchronize();
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        at::globalContext().setAllowTF32CuBLAS(false);
        const double tps = steps * 16.0 * 128.0 / seconds;
        std::printf("%-9s %12.6f %12.6f %10.2e %12.0f %10.2f\n", name.c_str(), loss_cpu, loss_gpu, rel, tps,
                    1000.0 * seconds / steps);
        char buf[256];
        std::snprintf(buf, sizeof buf, "%s{\"size\": \"%s\", \"loss_cpu\": %.8f, \"loss_gpu\": %.8f, \"tokens_per_s\": %.1f}",
                      name == llama_preset_names().front() ? "" : ", ", name.c_str(), loss_cpu, loss_gpu, tps);
        json += buf;
    }
    json += "]}\n";
    if (argc > 1) std::ofstream(argv[1]) << json;
    std::printf("gpu_check: %s\n", failures ? "FAILED" : "OK");
    return failures ? 1 : 0;
}
