// Tokenised examples, deterministic shuffling, batching, padding and response-only loss masks.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "h2tune/data/example.h"

namespace h2tune {

class BpeTokenizer;

struct EncodedExample {
    std::vector<int32_t> prompt;    // instruction + input + response marker (no loss)
    std::vector<int32_t> response;  // output tokens + EOS (loss)
    bool truncated = false;         // the input was cut to fit max_seq_len
};

struct EncodeStats {
    int64_t examples = 0;
    int64_t truncated = 0;
    int64_t tokens = 0;
};

// Encodes examples with the prompt template; inputs too long for `max_seq_len` are cut at the end
// of the input text (the response marker and the response are always kept). An example whose
// response alone does not fit throws DataError naming `source` and the example's line.
std::vector<EncodedExample> encode_examples(const std::vector<Example>& examples, const BpeTokenizer& tokenizer,
                                            int max_seq_len, const std::string& source,
                                            EncodeStats* stats = nullptr);

// One padded batch in the Hugging Face convention: `labels` is aligned with `input_ids` and holds
// -100 wherever no loss is taken (prompt, padding); the model's logits at t predict labels[t+1].
struct Batch {
    at::Tensor input_ids;       // [B, T] int64, right-padded with the pad id
    at::Tensor attention_mask;  // [B, T] int64, 1 = real token
    at::Tensor labels;          // [B, T] int64, -100 = ignored
    at::Tensor labels_host;     // the labels on the CPU when the others were moved to a GPU, else undefined
    int64_t response_tokens = 0;
    int64_t tokens = 0;         // real tokens in the batch
};
constexpr int64_t kIgnoreIndex = -100;

Batch make_batch(const std::vector<EncodedExample>& examples, const std::vector<int64_t>& indices, int32_t pad_id);

// Iterates over a fixed example set in epochs; every epoch's order is a permutation drawn from
// (seed, stream, epoch) so that it is independent of ranks and of how often the loader restarts.
// The position is a plain (epoch, offset) pair that checkpoints store to resume exactly.
class DataLoader {
public:
    struct Position {
        int64_t epoch = 0;
        int64_t offset = 0;  // examples already served in this epoch
    };

    DataLoader(std::vector<EncodedExample> examples, int batch_size, int32_t pad_id, uint64_t seed, uint64_t stream,
               bool shuffle = true);

    // The next batch; the last batch of an epoch may be smaller. Advances to the next epoch after it.
    Batch next();
    bool at_epoch_start() const { return position_.offset == 0; }
    int64_t batches_per_epoch() const;
    int64_t size() const { return static_cast<int64_t>(examples_.size()); }
    const std::vector<EncodedExample>& examples() const { return examples_; }

    Position position() const { return position_; }
    void set_position(Position p);
    // The order of one epoch (exposed for tests and diagnostics).
    std::vector<int64_t> epoch_order(int64_t epoch) const;

private:
    std::vector<EncodedExample> examples_;
    int batch_size_;
    int32_t pad_id_;
    uint64_t seed_, stream_;
    bool shuffle_;
    Position position_;
    std::vector<int64_t> order_;  // cached order of position_.epoch
    int64_t order_epoch_ = -1;
};

}  // namespace h2tune
