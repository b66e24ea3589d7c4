#include "h2tune/data/loader.h"

#include <torch/types.h>

#include <algorithm>
#include <numeric>

#include "h2tune/core/error.h"
#include "h2tune/core/rng.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"

namespace h2tune {

std::vector<EncodedExample> encode_examples(const std::vector<Example>& examples, const BpeTokenizer& tokenizer,
                                            int max_seq_len, const std::string& source, EncodeStats* stats) {
    const int32_t eos = tokenizer.eos_id();
    if (eos < 0) throw ModelError("tokenizer has no end-of-text token; cannot mark the end of responses");
    const std::vector<int32_t> tail = tokenizer.encode(prompt_tail());
    std::vector<EncodedExample> out;
    out.reserve(examples.size());
    EncodeStats local;
    for (const auto& ex : examples) {
        EncodedExample enc;
        enc.response = tokenizer.encode(ex.output);
        enc.response.push_back(eos);
        const int64_t fixed = static_cast<int64_t>(tail.size() + enc.response.size());
        // Keep at least a few head tokens so the instruction is still recognisable.
        if (fixed + 4 > max_seq_len)
            throw DataError(error_at(source, ex.line,
                                     "response needs " + std::to_string(fixed) +
                                         " tokens with the response marker, more than max_seq_len = " +
                                         std::to_string(max_seq_len)));
        std::vector<int32_t> head = tokenizer.encode(prompt_head(ex));
        const size_t head_budget = static_cast<size_t>(max_seq_len - fixed);
        if (head.size() > head_budget) {
            head.resize(head_budget);
            enc.truncated = true;
            ++local.truncated;
        }
        enc.prompt = std::move(head);
        enc.prompt.insert(enc.prompt.end(), tail.begin(), tail.end());
        local.tokens += static_cast<int64_t>(enc.prompt.size() + enc.response.size());
        ++local.examples;
        out.push_back(std::move(enc));
    }
    if (stats) *stats = local;
    return out;
}

Batch make_batch(const std::vector<EncodedExample>& examples, const std::vector<int64_t>& indices, int32_t pad_id) {
    if (indices.empty()) throw DataError("make_batch: empty batch");
    size_t max_len = 0;
    for (int64_t i : indices) {
        const auto& e = examples.at(static_cast<size_t>(i));
        max_len = std::max(max_len, e.prompt.size() + e.response.size());
    }
    const int64_t B = static_cast<int64_t>(indices.size()), T = static_cast<int64_t>(max_len);
    Batch b;
    b.input_ids = torch::full({B, T}, static_cast<int64_t>(pad_id), torch::kInt64);
    b.attention_mask = torch::zeros({B, T}, torch::kInt64);
    b.labels = torch::full({B, T}, kIgnoreIndex, torch::kInt64);
    auto ids = b.input_ids.accessor<int64_t, 2>();
    auto mask = b.attention_mask.accessor<int64_t, 2>();
    auto labels = b.labels.accessor<int64_t, 2>();
    for (int64_t r = 0; r < B; ++r) {
        const auto& e = examples[static_cast<size_t>(indices[static_cast<size_t>(r)])];
        int64_t t = 0;
        for (int32_t id : e.prompt) {
            ids[r][t] = id;
            mask[r][t] = 1;
            ++t;
        }
        for (int32_t id : e.response) {
            ids[r][t] = id;
            mask[r][t] = 1;
            labels[r][t] = id;
            ++t;
        }
        b.tokens += t;
        b.response_tokens += static_cast<int64_t>(e.response.size());
    }
    return b;
}

DataLoader::DataLoader(std::vector<EncodedExample> examples, int batch_size, int32_t pad_id, uint64_t seed,
                       uint64_t stream, bool shuffle)
    : examples_(std::move(examples)),
      batch_size_(batch_size),
      pad_id_(pad_id),
      seed_(seed),
      stream_(stream),
      shuffle_(shuffle) {
    if (examples_.empty()) throw DataError("data loader: no examples");
    if (batch_size_ < 1) throw ConfigError("data loader: batch_size must be >= 1");
}

int64_t DataLoader::batches_per_epoch() const { return (size() + batch_size_ - 1) / batch_size_; }

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
    if (!shuffle_) {
        std::vector<int64_t> p(static_cast<size_t>(size()));
        std::iota(p.begin(), p.end(), 0);
        return p;
    }
    return permutation(size(), stream_key(seed_, stream_, static_cast<uint64_t>(epoch), 0x10ade7));
}

void DataLoader::set_position(Position p) {
    if (p.epoch < 0 || p.offset < 0 || p.offset >= size())
        throw DataError("data loader: invalid position (epoch " + std::to_string(p.epoch) + ", offset " +
                        std::to_string(p.offset) + ") for " + std::to_string(size()) + " examples");
    position_ = p;
}

Batch DataLoader::next() {
    if (order_epoch_ != position_.epoch) {
        order_ = epoch_order(position_.epoch);
        order_epoch_ = position_.epoch;
    }
    const int64_t end = std::min(size(), position_.offset + batch_size_);
    std::vector<int64_t> idx(order_.begin() + position_.offset, order_.begin() + end);
    position_.offset = end;
    if (position_.offset >= size()) {
        position_.offset = 0;
        ++position_.epoch;
    }
    return make_batch(examples_, idx, pad_id_);
}

}  // namespace h2tune
