// tokenizer.json (tokenizer/bpe_tokenizer.h): BpeTokenizer::from_json on arbitrary text, and for a
// tokenizer that loads, the whole pipeline the hostile JSON built (added-token matching,
// normalizer, pre-tokenizer with its regex, BPE model, post-processor, decoder) on fixed texts.
#include "fuzz_common.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"

namespace {

// Letters, digits, spaces, punctuation, a contraction, newlines, accents (NFC/NFD differ),
// CJK, an emoji, an invalid UTF-8 byte and a special-token lookalike.
const char* const kTexts[] = {
    "Hello world, it's 2025!\n\n  tabs\there",
    "Caf\xc3\xa9 cafe\xcc\x81 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80 \xff<|endoftext|></s>",
    "",
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    h2tune_fuzz::expect_success_or_h2tune_error("BpeTokenizer::from_json", [&] {
        const h2tune::BpeTokenizer tokenizer =
            h2tune::BpeTokenizer::from_json(h2tune_fuzz::as_text(data, size), "tokenizer.json");
        for (const char* text : kTexts) {
            for (const auto& options : {h2tune::EncodeOptions{}, h2tune::EncodeOptions::hugging_face(true)}) {
                const std::vector<int32_t> ids = tokenizer.encode(text, options);
                for (int32_t id : ids)
                    if (id < 0 || id >= tokenizer.vocab_size()) {
                        std::fprintf(stderr, "FINDING: encode produced id %d of a vocabulary of %d\n", id,
                                     tokenizer.vocab_size());
                        std::abort();
                    }
                (void)tokenizer.decode(ids);
                (void)tokenizer.model_pieces(text, options);
            }
        }
    });
    return 0;
}
