// bench_step: times ONE client training step of h2tune — forward, response-only loss, backward and
// the AdamW step (AdapterTrainer: scheduled lr, global-norm clipping, AdamW) — on a frozen base
// model with a triple-matrix adapter  h = W0 x + s B (T + I) A x  on all 7 projections of every
// layer, and compares the achieved matmul FLOP/s with a large-matmul peak measured in the same run.
// Its PyTorch twin is bench/torch_step.py; bench/run_step_bench.sh runs both. See bench/README.md.
//
// The step is exactly what a federated client does per batch with the library's own classes
// (AlternatingTrainer::joint_step, src/train/alternating.cpp):
//   hidden = model->forward_hidden(input_ids, attention_mask);
//   loss = response_loss(response_logits(model, hidden, labels));   // LM head at response rows only
//   trainer.zero_grad(); loss.backward(); trainer.apply();   (= AdapterTrainer::step)
// --head full times the previous formulation instead: logits at every position,
//   loss = response_loss(model->forward(input_ids, attention_mask), labels).
// Trainable: every lora_A and lora_B (and, with --train-middle, every T); everything else frozen.
//
// Modes:
//   timing (default)  warm-up steps, then --steps timed steps; median ms/step, tokens/s, GFLOP/s,
//                     and the step peak memory (VmHWM over the steps above VmRSS before them).
//   --check           no timing: a few steps recording loss and gradient norm, then the adapters
//                     after them, for torch_step.py --check to compare against.
//   --export-dir DIR  writes DIR/<preset>.init.safetensors (batch, initial A/B/T, hyper-parameters
//                     as metadata; with --random also the base model under DIR/<preset>.random/) so
//                     that torch_step.py runs on exactly the same weights and data.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include "bench_common.h"
#include "h2tune/core/process_setup.h"
#include "h2tune/adapter/triple_adapter.h"
#include "h2tune/core/error.h"
#include "h2tune/data/loader.h"
#include "h2tune/model/llama.h"
#include "h2tune/model/llama_config.h"
#include "h2tune/model/safetensors.h"
#include "h2tune/train/adapted_model.h"
#include "h2tune/train/finetune.h"

#ifndef H2TUNE_SOURCE_DIR
#define H2TUNE_SOURCE_DIR "."
#endif

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using h2tune::bench::blas_threads;
using h2tune::bench::median;

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}


std::string fmt_double(double x) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", x);
    return buf;
}

// ---------------------------------------------------------------- environment (as src/main.cpp)

json environment_json(bool mallopt_tuned) {
    json env = json::object();
    for (const char* name : {"OMP_WAIT_POLICY", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                             "GOMP_SPINCOUNT", "OMP_PROC_BIND"}) {
        const char* v = std::getenv(name);
        env[name] = v ? json(v) : json(nullptr);
    }
    env["mallopt_tuned"] = mallopt_tuned;
    env["blas_threads"] = blas_threads();
    return env;
}

// ---------------------------------------------------------------- options

struct Options {
    std::vector<std::string> presets;
    std::string models_dir;
    bool random = false;
    int64_t rank = 16;
    double alpha = 16.0;
    int64_t batch = 16;
    int64_t seq = 128;
    int threads = 0;  // 0 = LibTorch's default
    int blas_threads = 0;  // 0 = leave OpenBLAS's pool as it is
    int warmup = 2;
    int steps = 10;
    uint64_t seed = 1234;
    double lr = 2e-4;
    int64_t schedule_steps = 1000;  // cosine length, so the lr hardly moves during the benchmark
    double weight_decay = 0.0;
    double grad_clip = 1.0;
    double b_std = 0.02;  // initial B ~ N(0, b_std^2) (not zero, so the adapter path does real work)
    double t_std = 0.1;   // T ~ N(0, t_std^2)
    bool train_middle = false;
    bool check = false;
    int check_steps = 3;
    std::string export_dir;
    std::string json_path;
    std::string profile_path;  // chrome trace of --profile-steps extra steps (LibTorch's profiler)
    int profile_steps = 3;
    int64_t peak_n = 2048;
    int peak_reps = 5;
    bool mallopt_tuned = true;
    std::string head = "rows";  // rows: LM head at the response rows only (h2tune's step); full: everywhere
    bool activation_checkpointing = false;  // recompute each decoder block in the backward
};

// ---------------------------------------------------------------- analytic FLOPs
//
// Matmul FLOPs only (2 per multiply-add); element-wise work (RMSNorm, RoPE, softmax, SiLU, the
// mask add, cross-entropy, AdamW) is not counted. N = batch * seq tokens (all real: the mask is
// all ones), S = seq, H heads of size hd, d = hidden, V = vocab, r = rank.
//
// Forward, per projection W0 [out, in] with adapter A [r, in], T [r, r], B [out, r]:
//     base     2 N in out
//     adapter  2 N (in r + r r + r out)          (u = x A^T; u += u T^T; delta = s u B^T)
//   attention, per layer: 2 * 2 B S S H hd        (Q K^T and P V; the full S x S matrix is
//                                                   computed — the causal half is not skipped)
//   lm_head (tied to the embedding): 2 N_h d V     N_h = the response rows with --head rows (the
//                                                   default: positions whose next label is kept),
//                                                   N with --head full (logits at every position)
//
// Backward — the base weights, norms and embedding are frozen, so NO weight gradient of W0 (nor of
// the embedding / lm_head) is formed; only activation gradients flow through them:
//     base     2 N in out           dX = dY W0       — only if X needs a gradient (see below)
//     adapter  2 N out r            dB = s dY^T u'
//              2 N out r            du' = s dY B
//              2 N r r              du = du' + du' T   (+ 2 N r r for dT with --train-middle)
//              2 N r in             dA = du^T X
//              2 N r in             dX += du A        — only if X needs a gradient
//   attention  2 x forward          (dQ, dK from dScores; dP, dV from dOut)
//   lm_head    2 N_h d V            dHidden = dLogits E (no dE: frozen)
// X "needs a gradient" unless it is layer 0's input to q/k/v: RMSNorm(embedding) depends on no
// trainable tensor, so autograd computes neither dX through W0 nor through A there. (Layer 0's
// gate/up inputs already depend on the q/k/v/o adapters through the residual stream.)
// Without a middle matrix (T undefined) the r r terms vanish; the benchmark always sets T.
struct StepFlops {
    double base_fwd = 0, adapter_fwd = 0, attention_fwd = 0, head_fwd = 0;
    double base_bwd = 0, adapter_bwd = 0, attention_bwd = 0, head_bwd = 0;
    double forward() const { return base_fwd + adapter_fwd + attention_fwd + head_fwd; }
    double backward() const { return base_bwd + adapter_bwd + attention_bwd + head_bwd; }
    double total() const { return forward() + backward(); }
    json to_json() const {
        return {{"forward", forward()},         {"backward", backward()},         {"total", total()},
                {"base_fwd", base_fwd},         {"adapter_fwd", adapter_fwd},     {"attention_fwd", attention_fwd},
                {"head_fwd", head_fwd},         {"base_bwd", base_bwd},           {"adapter_bwd", adapter_bwd},
                {"attention_bwd", attention_bwd}, {"head_bwd", head_bwd}};
    }
};

StepFlops step_flops(const h2tune::LlamaConfig& c, int64_t batch, int64_t seq, int64_t rank, bool middle,
                     bool train_middle, int64_t head_rows) {
    const double N = static_cast<double>(batch * seq), r = static_cast<double>(rank);
    const double d = static_cast<double>(c.hidden_size), f = static_cast<double>(c.intermediate_size);
    const double hd = static_cast<double>(c.head_dim());
    const double q_out = static_cast<double>(c.num_attention_heads) * hd;
    const double kv_out = static_cast<double>(c.num_key_value_heads) * hd;
    struct Proj {
        double in, out;
        bool attn_input;  // q, k, v: input is the attention block's normed input
    };
    const std::vector<Proj> projs = {{d, q_out, true},  {d, kv_out, true}, {d, kv_out, true}, {q_out, d, false},
                                     {d, f, false},     {d, f, false},     {f, d, false}};
    const double rr = middle ? r * r : 0.0;
    StepFlops out;
    for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
        for (const Proj& p : projs) {
            const bool x_grad = !(layer == 0 && p.attn_input);
            out.base_fwd += 2 * N * p.in * p.out;
            out.adapter_fwd += 2 * N * (p.in * r + rr + r * p.out);
            if (x_grad) out.base_bwd += 2 * N * p.in * p.out;
            out.adapter_bwd += 2 * N * (2 * p.out * r + rr + (middle && train_middle ? rr : 0.0) + p.in * r);
            if (x_grad) out.adapter_bwd += 2 * N * r * p.in;
        }
        const double attn = 2.0 * 2.0 * static_cast<double>(batch) * static_cast<double>(seq) *
                            static_cast<double>(seq) * q_out;
        out.attention_fwd += attn;
        out.attention_bwd += 2 * attn;
    }
    out.head_fwd = 2 * static_cast<double>(head_rows) * d * static_cast<double>(c.vocab_size);
    out.head_bwd = out.head_fwd;
    return out;
}

// ---------------------------------------------------------------- setup

struct Setup {
    std::string preset, model_dir;
    h2tune::AdaptedModel adapted;
    std::vector<torch::Tensor> middles;    // T per adapter, same order as adapted.adapters
    std::vector<torch::Tensor> trainable;  // A, B per adapter (+ every T with --train-middle)
    h2tune::Batch batch;
    int64_t head_rows = 0;  // positions the LM head runs at (response rows, or every position)
    int64_t base_params = 0;
    int64_t adapter_params = 0;
};

h2tune::LlamaConfig preset_config(const Options& o, const std::string& preset) {
    const std::string cfg = o.models_dir + "/" + preset + "/config.json";
    if (fs::exists(cfg)) return h2tune::llama_config_load(cfg);
    return h2tune::llama_preset(preset, 4096);
}

// Seeds: base model (with --random) from seed, A from seed+1 (attach_adapters), B and T from
// seed+2, the batch from seed+3.
Setup build_setup(const Options& o, const std::string& preset) {
    Setup s;
    s.preset = preset;
    s.model_dir = o.models_dir + "/" + preset;
    h2tune::LlamaForCausalLM model{nullptr};
    if (o.random) {
        torch::manual_seed(o.seed);
        model = h2tune::LlamaForCausalLM(preset_config(o, preset));
        s.model_dir = "";
        if (!o.export_dir.empty()) {
            s.model_dir = fs::absolute(o.export_dir + "/" + preset + ".random").string();
            h2tune::save_pretrained(model, s.model_dir);
        }
    } else {
        model = h2tune::load_pretrained(s.model_dir);
        s.model_dir = fs::absolute(s.model_dir).string();
    }
    model->train();
    model->set_activation_checkpointing(o.activation_checkpointing);
    for (const auto& p : model->parameters()) s.base_params += p.numel();

    s.adapted = h2tune::attach_adapters(model, h2tune::adapter_module_types(), o.rank, o.alpha, o.seed + 1);
    {
        torch::NoGradGuard no_grad;
        torch::manual_seed(o.seed + 2);
        for (auto& ad : s.adapted.adapters) {
            ad->lora_B.normal_(0.0, o.b_std);
            torch::Tensor t = torch::randn({o.rank, o.rank}) * o.t_std;
            s.middles.push_back(t);
        }
    }
    for (size_t i = 0; i < s.adapted.adapters.size(); ++i) {
        if (o.train_middle) s.middles[i].set_requires_grad(true);
        s.adapted.adapters[i]->set_middle(s.middles[i]);
    }
    s.trainable = s.adapted.adapter_parameters();
    if (o.train_middle) s.trainable.insert(s.trainable.end(), s.middles.begin(), s.middles.end());
    for (const auto& p : s.trainable) s.adapter_params += p.numel();

    // Batch: random ids, all real tokens, loss on the last quarter (the "response").
    torch::manual_seed(o.seed + 3);
    const int64_t vocab = model->config().vocab_size;
    h2tune::Batch& b = s.batch;
    b.input_ids = torch::randint(0, vocab, {o.batch, o.seq}, torch::kLong);
    b.attention_mask = torch::ones({o.batch, o.seq}, torch::kLong);
    b.labels = torch::full({o.batch, o.seq}, h2tune::kIgnoreIndex, torch::kLong);
    const int64_t resp = std::max<int64_t>(1, o.seq / 4);
    b.labels.narrow(1, o.seq - resp, resp).copy_(b.input_ids.narrow(1, o.seq - resp, resp));
    b.tokens = o.batch * o.seq;
    b.response_tokens = o.batch * resp;
    s.head_rows = o.head == "full" ? o.batch * o.seq : h2tune::response_rows(b.labels).rows.numel();
    return s;
}

h2tune::FinetuneOptions finetune_options(const Options& o) {
    h2tune::FinetuneOptions f;
    f.schedule.lr = o.lr;
    f.schedule.total_steps = o.schedule_steps;
    f.schedule.warmup_steps = 0;
    f.weight_decay = o.weight_decay;
    f.grad_clip = o.grad_clip;
    return f;
}

// Tensors shared with torch_step.py: "<projection>.lora_A", ".lora_B", ".middle", and "batch.*".
std::map<std::string, torch::Tensor> adapter_tensors(const Setup& s) {
    std::map<std::string, torch::Tensor> t;
    for (size_t i = 0; i < s.adapted.adapters.size(); ++i) {
        const std::string& n = s.adapted.names[i];
        t[n + ".lora_A"] = s.adapted.adapters[i]->lora_A.detach().clone();
        t[n + ".lora_B"] = s.adapted.adapters[i]->lora_B.detach().clone();
        t[n + ".middle"] = s.middles[i].detach().clone();
    }
    return t;
}

void export_init(const Options& o, const Setup& s) {
    fs::create_directories(o.export_dir);
    auto t = adapter_tensors(s);
    t["batch.input_ids"] = s.batch.input_ids;
    t["batch.attention_mask"] = s.batch.attention_mask;
    t["batch.labels"] = s.batch.labels;
    const h2tune::FinetuneOptions f = finetune_options(o);
    std::map<std::string, std::string> meta = {
        {"format", "pt"},
        {"preset", s.preset},
        {"model_dir", s.model_dir},
        {"random", o.random ? "1" : "0"},
        {"rank", std::to_string(o.rank)},
        {"alpha", fmt_double(o.alpha)},
        {"lr", fmt_double(f.schedule.lr)},
        {"total_steps", std::to_string(f.schedule.total_steps)},
        {"warmup_steps", std::to_string(f.schedule.warmup_steps)},
        {"min_lr_ratio", fmt_double(f.schedule.min_lr_ratio)},
        {"weight_decay", fmt_double(f.weight_decay)},
        {"grad_clip", fmt_double(f.grad_clip)},
        {"train_middle", o.train_middle ? "1" : "0"},
        {"seed", std::to_string(o.seed)},
        {"adapters", std::to_string(s.adapted.adapters.size())},
        {"head", o.head},
    };
    const std::string path = o.export_dir + "/" + s.preset + ".init.safetensors";
    h2tune::safetensors_save(path, t, meta);
    std::printf("exported %s\n", path.c_str());
}

// ---------------------------------------------------------------- the step

struct StepResult {
    double forward_ms = 0, backward_ms = 0, optimizer_ms = 0, total_ms = 0;
    double loss = 0, grad_norm = std::numeric_limits<double>::quiet_NaN();
};

double global_grad_norm(const std::vector<torch::Tensor>& params) {
    double sq = 0;
    for (const auto& p : params)
        if (p.grad().defined()) {
            const double n = p.grad().norm().item<double>();
            sq += n * n;
        }
    return std::sqrt(sq);
}

// One client step, phase by phase. AdapterTrainer::step(loss) is zero_grad + backward + apply; it
// is split here only to time the phases (and, in --check, read the gradient norm before clipping).
torch::Tensor step_loss(Setup& s, const std::string& head) {
    h2tune::LlamaForCausalLM& model = s.adapted.model;
    if (head == "full") return h2tune::response_loss(model->forward(s.batch.input_ids, s.batch.attention_mask), s.batch.labels);
    return h2tune::response_loss(h2tune::response_logits(
        model, model->forward_hidden(s.batch.input_ids, s.batch.attention_mask), s.batch.labels));
}

StepResult train_step(Setup& s, h2tune::AdapterTrainer& trainer, bool want_grad_norm, const std::string& head) {
    StepResult r;
    const auto t0 = Clock::now();
    torch::Tensor loss = step_loss(s, head);
    const auto t1 = Clock::now();
    trainer.zero_grad();
    loss.backward();
    const auto t2 = Clock::now();
    if (want_grad_norm) r.grad_norm = global_grad_norm(s.trainable);
    const auto t2b = Clock::now();
    trainer.apply();
    r.loss = loss.item<double>();
    const auto t3 = Clock::now();
    r.forward_ms = ms_between(t0, t1);
    r.backward_ms = ms_between(t1, t2);
    r.optimizer_ms = ms_between(t2b, t3);
    r.total_ms = r.forward_ms + r.backward_ms + r.optimizer_ms;
    return r;
}

// ---------------------------------------------------------------- peak

struct Peak {
    int64_t n = 0;
    double best_gflops = 0, median_gflops = 0;
};

Peak measure_peak(int64_t n, int reps) {
    torch::NoGradGuard no_grad;
    torch::manual_seed(7);
    const torch::Tensor a = torch::randn({n, n}), b = torch::randn({n, n});
    torch::Tensor c = torch::empty({n, n});
    torch::mm_out(c, a, b);  // warm-up (thread pools, page faults)
    std::vector<double> gf;
    for (int i = 0; i < reps; ++i) {
        const auto t0 = Clock::now();
        torch::mm_out(c, a, b);
        const double s = ms_between(t0, Clock::now()) / 1e3;
        gf.push_back(2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / s / 1e9);
    }
    Peak p;
    p.n = n;
    p.best_gflops = *std::max_element(gf.begin(), gf.end());
    p.median_gflops = median(gf);
    return p;
}

// ---------------------------------------------------------------- modes

json run_check(const Options& o, Setup& s) {
    h2tune::AdapterTrainer trainer(s.trainable, finetune_options(o));
    std::vector<double> losses, norms;
    for (int i = 0; i < o.check_steps; ++i) {
        const StepResult r = train_step(s, trainer, /*want_grad_norm=*/true, o.head);
        losses.push_back(r.loss);
        norms.push_back(r.grad_norm);
    }
    double final_loss = 0;
    {
        torch::NoGradGuard no_grad;
        final_loss = step_loss(s, o.head).item<double>();
    }
    std::printf("%-9s check: losses", s.preset.c_str());
    for (double l : losses) std::printf(" %.8f", l);
    std::printf("  grad norms");
    for (double g : norms) std::printf(" %.6g", g);
    std::printf("  final %.8f\n", final_loss);
    json j = {{"preset", s.preset}, {"losses", losses}, {"grad_norms", norms}, {"final_loss", final_loss},
              {"check_steps", o.check_steps}};
    if (!o.export_dir.empty()) {
        const std::string path = o.export_dir + "/" + s.preset + ".after.safetensors";
        h2tune::safetensors_save(path, adapter_tensors(s), {{"format", "pt"}});
        std::ofstream(o.export_dir + "/" + s.preset + ".check.json") << j.dump(2) << "\n";
        j["after"] = path;
    }
    return j;
}

json run_timing(const Options& o, Setup& s, const Peak& peak) {
    h2tune::AdapterTrainer trainer(s.trainable, finetune_options(o));
    // Step memory: the peak resident set over the warm-up and timed steps above the resident set
    // with the model, adapters and batch in place (the peak of loading is forgotten first).
    const bool peak_reset = h2tune::reset_peak_resident_memory();
    const int64_t rss_before = h2tune::resident_memory_bytes();
    double first_loss = 0;
    for (int i = 0; i < o.warmup; ++i) {
        const StepResult r = train_step(s, trainer, false, o.head);
        if (i == 0) first_loss = r.loss;
    }
    std::vector<double> total, fwd, bwd, opt;
    for (int i = 0; i < o.steps; ++i) {
        const StepResult r = train_step(s, trainer, false, o.head);
        if (o.warmup == 0 && i == 0) first_loss = r.loss;
        total.push_back(r.total_ms);
        fwd.push_back(r.forward_ms);
        bwd.push_back(r.backward_ms);
        opt.push_back(r.optimizer_ms);
    }
    if (!o.profile_path.empty()) {
        // Extra steps after the timed ones, so profiling overhead never reaches the numbers above.
        // One trace per preset; summarise with: torch_step.py --summarize-trace PATH
        std::string path = o.profile_path;
        if (o.presets.size() > 1) path += "." + s.preset;
        {
            torch::autograd::profiler::RecordProfile guard(path);
            for (int i = 0; i < o.profile_steps; ++i) train_step(s, trainer, false, o.head);
        }
        std::printf("%s: wrote profiler trace %s (%d steps)\n", s.preset.c_str(), path.c_str(), o.profile_steps);
    }
    const int64_t hwm = h2tune::peak_resident_memory_bytes();
    const double step_peak_mib =
        peak_reset && hwm >= 0 && rss_before >= 0 ? static_cast<double>(hwm - rss_before) / (1024.0 * 1024.0) : -1.0;
    const h2tune::LlamaConfig& c = s.adapted.model->config();
    const StepFlops fl = step_flops(c, o.batch, o.seq, o.rank, /*middle=*/true, o.train_middle, s.head_rows);
    const double ms = median(total);
    const double tokens = static_cast<double>(s.batch.tokens);
    const double gflops = fl.total() / (ms / 1e3) / 1e9;
    return {{"preset", s.preset},
            {"model_dir", s.model_dir},
            {"random", o.random},
            {"config",
             {{"hidden_size", c.hidden_size},
              {"intermediate_size", c.intermediate_size},
              {"num_hidden_layers", c.num_hidden_layers},
              {"num_attention_heads", c.num_attention_heads},
              {"num_key_value_heads", c.num_key_value_heads},
              {"vocab_size", c.vocab_size}}},
            {"batch", o.batch},
            {"seq", o.seq},
            {"rank", o.rank},
            {"train_middle", o.train_middle},
            {"head", o.head},
            {"head_rows", s.head_rows},
            {"activation_checkpointing", o.activation_checkpointing},
            {"memory_mib", {{"resident_before_steps", static_cast<double>(rss_before) / (1024.0 * 1024.0)},
                            {"step_peak_above_it", step_peak_mib}}},
            {"tokens", s.batch.tokens},
            {"response_tokens", s.batch.response_tokens},
            {"base_params", s.base_params},
            {"trainable_params", s.adapter_params},
            {"warmup", o.warmup},
            {"steps", o.steps},
            {"first_loss", first_loss},
            {"ms",
             {{"median", ms},
              {"min", *std::min_element(total.begin(), total.end())},
              {"max", *std::max_element(total.begin(), total.end())},
              {"all", total}}},
            {"phase_ms", {{"forward", median(fwd)}, {"backward", median(bwd)}, {"optimizer", median(opt)}}},
            {"tokens_per_s", tokens / (ms / 1e3)},
            {"flops", fl.to_json()},
            {"gflops_per_s", gflops},
            {"fraction_of_peak", peak.best_gflops > 0 ? gflops / peak.best_gflops : 0.0}};
}

void print_table(const json& results, const Peak& peak, int threads) {
    if (peak.n == 0)
        std::printf("\nbench_step (C++ / LibTorch %s), threads %d (OpenBLAS %d), no peak measured\n", TORCH_VERSION,
                    threads, blas_threads());
    else
        std::printf("\nbench_step (C++ / LibTorch %s), threads %d (OpenBLAS %d), peak %lldx%lld fp32 matmul: "
                    "best %.1f GFLOP/s (median %.1f)\n",
                    TORCH_VERSION, threads, blas_threads(), static_cast<long long>(peak.n),
                    static_cast<long long>(peak.n), peak.best_gflops, peak.median_gflops);
    std::printf("%-9s %7s %9s %9s %9s %9s %10s %9s %9s %7s\n", "preset", "tokens", "ms/step", "fwd ms", "bwd ms",
                "opt ms", "tok/s", "GFLOP", "GFLOP/s", "%peak");
    for (const auto& r : results) {
        std::printf("%-9s %7lld %9.2f %9.2f %9.2f %9.2f %10.1f %9.3f %9.2f %6.1f%%\n",
                    r["preset"].get<std::string>().c_str(), static_cast<long long>(r["tokens"].get<int64_t>()),
                    r["ms"]["median"].get<double>(), r["phase_ms"]["forward"].get<double>(),
                    r["phase_ms"]["backward"].get<double>(), r["phase_ms"]["optimizer"].get<double>(),
                    r["tokens_per_s"].get<double>(), r["flops"]["total"].get<double>() / 1e9,
                    r["gflops_per_s"].get<double>(), 100.0 * r["fraction_of_peak"].get<double>());
    }
    for (const auto& r : results)
        std::printf("%s: step peak memory %.0f MiB above the %.0f MiB resident before the steps (activation "
                    "checkpointing %s)\n",
                    r["preset"].get<std::string>().c_str(), r["memory_mib"]["step_peak_above_it"].get<double>(),
                    r["memory_mib"]["resident_before_steps"].get<double>(),
                    r["activation_checkpointing"].get<bool>() ? "on" : "off");
}

bool parse_options(int argc, char** argv, Options& o) {
    namespace po = boost::program_options;
    std::string presets = "all";
    po::options_description desc("bench_step: time one adapter training step (see bench/README.md)");
    // clang-format off
    desc.add_options()
        ("help,h", "show this help")
        ("preset", po::value(&presets)->default_value(presets), "h2-tiny, h2-small, h2-base, a comma list, or all")
        ("models-dir", po::value(&o.models_dir)->default_value(std::string(H2TUNE_SOURCE_DIR) + "/data/models"), "directory holding <preset>/config.json and model.safetensors")
        ("random", po::bool_switch(&o.random), "random base weights (seeded) instead of the pretrained ones")
        ("rank", po::value(&o.rank)->default_value(o.rank), "adapter rank r")
        ("alpha", po::value(&o.alpha)->default_value(o.alpha), "adapter alpha (scale s = alpha / r)")
        ("batch", po::value(&o.batch)->default_value(o.batch), "sequences per batch")
        ("seq", po::value(&o.seq)->default_value(o.seq), "tokens per sequence")
        ("threads", po::value(&o.threads)->default_value(o.threads), "torch::set_num_threads (0 = LibTorch's default)")
        ("blas-threads", po::value(&o.blas_threads)->default_value(o.blas_threads), "openblas_set_num_threads (0 = leave; set_num_threads does not reach it)")
        ("warmup", po::value(&o.warmup)->default_value(o.warmup), "untimed warm-up steps")
        ("steps", po::value(&o.steps)->default_value(o.steps), "timed steps (median reported)")
        ("seed", po::value(&o.seed)->default_value(o.seed), "seed of weights (--random), adapters and batch")
        ("lr", po::value(&o.lr)->default_value(o.lr, "2e-4"), "peak learning rate")
        ("weight-decay", po::value(&o.weight_decay)->default_value(o.weight_decay), "AdamW weight decay")
        ("grad-clip", po::value(&o.grad_clip)->default_value(o.grad_clip), "max global gradient norm (0 = off)")
        ("b-std", po::value(&o.b_std)->default_value(o.b_std, "0.02"), "std of the initial B")
        ("t-std", po::value(&o.t_std)->default_value(o.t_std, "0.1"), "std of the middle matrix T")
        ("train-middle", po::bool_switch(&o.train_middle), "T is trainable too (default: fixed, as in a specific step)")
        ("head", po::value(&o.head)->default_value(o.head), "rows: LM head at the response rows only (h2tune's step); full: at every position (before)")
        ("activation-checkpointing", po::bool_switch(&o.activation_checkpointing),
         "recompute each decoder block in the backward (client.N.activation_checkpointing)")
        ("check", po::bool_switch(&o.check), "correctness mode: record losses/grad norms/adapters, no timing")
        ("check-steps", po::value(&o.check_steps)->default_value(o.check_steps), "optimiser steps in --check")
        ("export-dir", po::value(&o.export_dir), "write <preset>.init.safetensors (and --check results) here")
        ("json", po::value(&o.json_path), "write the results as JSON")
        ("profile", po::value(&o.profile_path), "after timing, write a chrome trace of --profile-steps steps here")
        ("profile-steps", po::value(&o.profile_steps)->default_value(o.profile_steps), "steps traced by --profile")
        ("peak-n", po::value(&o.peak_n)->default_value(o.peak_n), "size of the square peak matmul (0 = skip)")
        ("peak-reps", po::value(&o.peak_reps)->default_value(o.peak_reps), "timed peak matmuls (best reported)")
        ("no-mallopt", "leave glibc malloc at its defaults (h2tune's main tunes it)");
    // clang-format on
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
    if (vm.count("help")) {
        std::cout << desc << "\n";
        return false;
    }
    o.mallopt_tuned = vm.count("no-mallopt") == 0;
    if (presets == "all") {
        o.presets = {"h2-tiny", "h2-small", "h2-base"};
    } else {
        size_t start = 0;
        while (start <= presets.size()) {
            const size_t comma = presets.find(',', start);
            const std::string p = presets.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
            if (!p.empty()) o.presets.push_back(p);
            if (comma == std::string::npos) break;
            start = comma + 1;
        }
    }
    if (o.presets.empty()) throw h2tune::ConfigError("--preset: no preset given");
    if (o.head != "rows" && o.head != "full") throw h2tune::ConfigError("--head: rows or full");
    if (o.rank < 1 || o.batch < 1 || o.seq < 2 || o.steps < 1 || o.warmup < 0 || o.check_steps < 1)
        throw h2tune::ConfigError("--rank, --batch, --steps, --check-steps must be positive, --seq >= 2");
    return true;
}

int run(int argc, char** argv) {
    Options o;
    if (!parse_options(argc, argv, o)) return 0;
    if (o.mallopt_tuned) {
        // As h2tune's main: no mmap/munmap (and page faults) for every large activation.
        h2tune::tune_allocator();
    }
    if (o.threads > 0) torch::set_num_threads(o.threads);
    if (o.blas_threads > 0 && !h2tune::set_blas_threads(o.blas_threads))
        std::fprintf(stderr, "bench_step: --blas-threads: the BLAS is not OpenBLAS; ignored\n");
    const int threads = torch::get_num_threads();

    json out = {{"tool", "bench_step"},
                {"impl", "cpp"},
                {"torch_version", TORCH_VERSION},
                {"threads", threads},
                {"blas_threads", blas_threads()},
                {"env", environment_json(o.mallopt_tuned)}};
    json results = json::array();
    Peak peak;
    if (!o.check && o.peak_n > 0) {
        peak = measure_peak(o.peak_n, std::max(1, o.peak_reps));
        out["peak"] = {{"n", peak.n}, {"best_gflops", peak.best_gflops}, {"median_gflops", peak.median_gflops}};
    }
    for (const auto& preset : o.presets) {
        Setup s = build_setup(o, preset);
        if (!o.export_dir.empty()) export_init(o, s);
        results.push_back(o.check ? run_check(o, s) : run_timing(o, s, peak));
        std::fflush(stdout);
    }
    out[o.check ? "check" : "results"] = results;
    if (!o.check) print_table(results, peak, threads);
    if (!o.json_path.empty()) h2tune::bench::write_json(o.json_path, out);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    h2tune::ensure_passive_openmp(argv);
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_step: error: %s\n", e.what());
        return 1;
    }
}
