// BaseModelPool: one frozen base per (files, dtype, device) on a rank, whatever the spelling of
// the directory; adapters of several clients on one shared base, swapped by activate().
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "h2tune/app/base_model_pool.h"
#include "h2tune/train/adapted_model.h"

namespace fs = std::filesystem;
using namespace h2tune;

namespace {

struct PoolFixture : ::testing::Test {
    fs::path dir;
    std::string model_dir, tokenizer;

    void SetUp() override {
        dir = fs::temp_directory_path() / ("h2tune_pool_" + std::to_string(::getpid()));
        fs::remove_all(dir);
        LlamaConfig c;
        c.vocab_size = 300;
        c.hidden_size = 32;
        c.intermediate_size = 64;
        c.num_hidden_layers = 2;
        c.num_attention_heads = 2;
        c.num_key_value_heads = 1;
        c.max_position_embeddings = 64;
        torch::manual_seed(3);
        model_dir = (dir / "model").string();
        save_pretrained(LlamaForCausalLM(c), model_dir);
        BpeTrainOptions t;
        t.vocab_size = 280;
        t.min_frequency = 1;
        tokenizer = (dir / "model" / "tokenizer.json").string();
        bpe_train({"the cat sat on the mat", "the dog sat on the log"}, t).save(tokenizer);
    }
    void TearDown() override { fs::remove_all(dir); }
};

}  // namespace

TEST_F(PoolFixture, OneModelPerFilesDtypeAndDevice) {
    BaseModelPool pool;
    const PooledModel a = pool.model(model_dir, tokenizer, torch::kFloat32, torch::kCPU);
    // Another spelling of the same directory: a trailing slash, a "." component, a symbolic link.
    fs::create_directory_symlink(fs::path(model_dir), dir / "link");
    const PooledModel b = pool.model(model_dir + "/", tokenizer, torch::kFloat32, torch::kCPU);
    const PooledModel c = pool.model((dir / "." / "link").string(), tokenizer, torch::kFloat32, torch::kCPU);
    EXPECT_EQ(a.model.ptr().get(), b.model.ptr().get());
    EXPECT_EQ(a.model.ptr().get(), c.model.ptr().get());
    EXPECT_EQ(pool.models_loaded(), 1);
    EXPECT_FALSE(a.fingerprint.empty());
    EXPECT_EQ(a.fingerprint, c.fingerprint);
    int64_t bytes = 0;
    for (const auto& p : a.model->parameters()) bytes += p.numel() * 4;
    EXPECT_GE(pool.model_bytes(), bytes);  // parameters plus the rotary buffers

    const PooledModel bf16 = pool.model(model_dir, tokenizer, torch::kBFloat16, torch::kCPU);
    EXPECT_NE(bf16.model.ptr().get(), a.model.ptr().get());
    EXPECT_EQ(bf16.model->dtype(), torch::kBFloat16);
    EXPECT_EQ(pool.models_loaded(), 2);

    EXPECT_EQ(pool.tokenizer(tokenizer).get(), pool.tokenizer((dir / "link" / "tokenizer.json").string()).get());
}

TEST_F(PoolFixture, ActivateSwapsEachClientsAdaptersOnASharedBase) {
    BaseModelPool pool;
    LlamaForCausalLM shared = pool.model(model_dir, tokenizer, torch::kFloat32, torch::kCPU).model;
    AdaptedModel first = attach_adapters(shared, {"q", "v"}, 2, 4.0, /*init_key=*/1);
    AdaptedModel second = attach_adapters(shared, {"q", "v"}, 4, 4.0, /*init_key=*/2);
    {
        torch::NoGradGuard no_grad;  // B = 0 at the start would make both adapters the identity
        for (auto& a : first.adapters) a->lora_B.normal_(0.0, 0.5);
        for (auto& a : second.adapters) a->lora_B.normal_(0.0, 0.5);
    }
    const torch::Tensor ids = torch::tensor({{5, 9, 17, 33, 2}}, torch::kInt64);
    torch::NoGradGuard no_grad;
    shared->eval();

    // The same base privately owned by each client gives the reference outputs.
    auto private_logits = [&](const AdaptedModel& src, int64_t rank, uint64_t key) {
        LlamaForCausalLM own = load_pretrained(model_dir);
        AdaptedModel mine = attach_adapters(own, {"q", "v"}, rank, 4.0, key);
        for (size_t i = 0; i < mine.adapters.size(); ++i) {
            mine.adapters[i]->lora_A.copy_(src.adapters[i]->lora_A);
            mine.adapters[i]->lora_B.copy_(src.adapters[i]->lora_B);
        }
        own->eval();
        return own->forward(ids);
    };
    const torch::Tensor first_ref = private_logits(first, 2, 1), second_ref = private_logits(second, 4, 2);
    ASSERT_FALSE(torch::equal(first_ref, second_ref));

    // The last attach wins until a client activates its own, in any order, any number of times.
    EXPECT_TRUE(torch::equal(shared->forward(ids), second_ref));
    first.activate();
    EXPECT_TRUE(torch::equal(shared->forward(ids), first_ref));
    second.activate();
    EXPECT_TRUE(torch::equal(shared->forward(ids), second_ref));
    first.activate();
    first.activate();
    EXPECT_TRUE(torch::equal(shared->forward(ids), first_ref));

    // A client adapting fewer projections detaches the others' adapters from the rest.
    AdaptedModel q_only = attach_adapters(shared, {"q"}, 2, 4.0, 3);
    second.activate();
    q_only.activate();
    for (const auto& [name, projection] : shared->projections()) {
        const bool is_q = name.find("q_proj") != std::string::npos;
        EXPECT_EQ(projection->adapter() != nullptr, is_q) << name;
    }
}
