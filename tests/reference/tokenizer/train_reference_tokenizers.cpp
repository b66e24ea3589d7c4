// Trains byte-level BPE tokenizers with h2tune's trainer (every pre-tokenizer kind) on the
// reference corpus and saves them, so that hf_reference.py can record what Hugging Face
// `tokenizers` makes of h2tune's own files. Usage: train_reference_tokenizers OUT_DIR
// (OUT_DIR/corpus.json must exist; it writes OUT_DIR/trained_<kind>_tokenizer.json).
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "h2tune/core/error.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"

int main(int argc, char** argv) {
    using h2tune::BpeTokenizer;
    if (argc != 2) {
        std::cerr << "usage: train_reference_tokenizers OUT_DIR\n";
        return 2;
    }
    const std::string dir = argv[1];
    try {
        std::ifstream in(dir + "/corpus.json", std::ios::binary);
        if (!in) throw h2tune::IoError(dir + "/corpus.json: cannot open (run hf_reference.py corpus first)");
        const std::vector<std::string> texts = nlohmann::json::parse(in).get<std::vector<std::string>>();
        const std::pair<const char*, BpeTokenizer::PreTokenizer> kinds[] = {
            {"trained_gpt2", BpeTokenizer::PreTokenizer::Gpt2},
            {"trained_llama3", BpeTokenizer::PreTokenizer::Llama3},
            {"trained_qwen2", BpeTokenizer::PreTokenizer::Qwen2},
            {"trained_gpt2_digits", BpeTokenizer::PreTokenizer::Gpt2IsolatedDigits}};
        for (const auto& [name, kind] : kinds) {
            h2tune::BpeTrainOptions options;
            options.vocab_size = 3000;
            options.pre_tokenizer = kind;
            const std::string path = dir + "/" + name + "_tokenizer.json";
            h2tune::bpe_train(texts, options).save(path);
            std::cout << "wrote " << path << "\n";
        }
    } catch (const std::exception& e) {
        std::cerr << e.what() << "\n";
        return 1;
    }
    return 0;
}
