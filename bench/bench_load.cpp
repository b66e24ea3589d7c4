// bench_load: loading a Hugging Face checkpoint into h2tune's decoder — wall time and peak
// resident memory against the checkpoint's size on disk. The loader reads each tensor straight
// into its parameter's storage, so a checkpoint loaded in its own dtype should need little more
// than its size (the target: at most ~1.3x).
//   bench_load MODEL_DIR [float32|bfloat16|float16] [--json OUT]
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <torch/torch.h>

#include "h2tune/model/llama.h"

namespace fs = std::filesystem;

namespace {

// Peak resident set size of this process so far, in bytes (Linux reports KiB).
double peak_rss_bytes() {
    struct rusage usage {};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_maxrss) * 1024.0;
}

double weight_bytes(const std::string& dir) {
    double total = 0;
    for (const auto& entry : fs::directory_iterator(dir))
        if (entry.path().extension() == ".safetensors") total += static_cast<double>(entry.file_size());
    return total;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: bench_load MODEL_DIR [float32|bfloat16|float16] [--json OUT]\n");
        return 2;
    }
    const std::string dir = argv[1];
    std::string dtype_name = "float32", json_out;
    for (int i = 2; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--json" && i + 1 < argc)
            json_out = argv[++i];
        else
            dtype_name = a;
    }
    try {
        const torch::Dtype dtype = h2tune::model_dtype_from_name(dtype_name, "dtype");
        torch::ones({1}).add_(1);  // LibTorch's own start-up allocations, before the baseline
        const double before = peak_rss_bytes();
        const auto t0 = std::chrono::steady_clock::now();
        h2tune::LlamaForCausalLM model = h2tune::load_pretrained(dir, dtype);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double after = peak_rss_bytes();
        int64_t params = 0;
        for (const auto& p : model->parameters()) params += p.numel();
        const double file = weight_bytes(dir);
        const double model_bytes = static_cast<double>(params) * static_cast<double>(torch::elementSize(dtype));
        const double grown = after - before;
        std::printf("model %s (%s, %.3f B parameters, %s)\n", dir.c_str(), model->config().model_type.c_str(),
                    static_cast<double>(params) / 1e9, dtype_name.c_str());
        std::printf("weights on disk %.1f MiB, parameters in memory %.1f MiB\n", file / 1048576.0, model_bytes / 1048576.0);
        std::printf("load %.2f s; peak RSS %.1f MiB (%.1f MiB before loading): grew %.1f MiB = %.3fx the files\n",
                    seconds, after / 1048576.0, before / 1048576.0, grown / 1048576.0, grown / file);
        if (!json_out.empty()) {
            std::ofstream out(json_out);
            out << "{\"model_dir\": \"" << dir << "\", \"dtype\": \"" << dtype_name << "\", \"parameters\": " << params
                << ", \"file_bytes\": " << file << ", \"peak_rss_bytes\": " << after
                << ", \"rss_before_bytes\": " << before << ", \"load_seconds\": " << seconds
                << ", \"growth_over_file\": " << grown / file << "}\n";
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_load: %s\n", e.what());
        return 1;
    }
    return 0;
}
