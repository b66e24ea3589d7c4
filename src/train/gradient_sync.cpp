#include "h2tune/train/gradient_sync.h"

#include <torch/torch.h>

#include "h2tune/core/error.h"

namespace h2tune {

RowShare row_share(int64_t rows, int member, int members) {
    if (members < 1 || member < 0 || member >= members)
        throw Error("row_share: member " + std::to_string(member) + " of " + std::to_string(members));
    const int64_t base = rows / members, extra = rows % members, m = member;
    RowShare s;
    s.begin = m * base + std::min(m, extra);
    s.end = s.begin + base + (m < extra ? 1 : 0);
    return s;
}

int64_t count_response_rows(const torch::Tensor& labels) {
    if (labels.size(1) < 2) return 0;
    return labels.slice(1, 1).ne(kIgnoreIndex).sum().item<int64_t>();
}

BatchPart batch_part(const Batch& batch, int member, int members) {
    BatchPart part;
    if (members == 1) {
        part.batch = batch;
        return part;
    }
    const torch::Tensor& host_labels = batch.labels_host.defined() ? batch.labels_host : batch.labels;
    const RowShare share = row_share(host_labels.size(0), member, members);
    const int64_t total = count_response_rows(host_labels);
    const int64_t mine = share.end > share.begin ? count_response_rows(host_labels.slice(0, share.begin, share.end)) : 0;
    part.empty = mine == 0;
    part.weight = total > 0 ? static_cast<double>(mine) / static_cast<double>(total) : 0.0;
    if (part.empty) return part;
    Batch& b = part.batch;
    b.input_ids = batch.input_ids.slice(0, share.begin, share.end);
    b.attention_mask = batch.attention_mask.slice(0, share.begin, share.end);
    b.labels = batch.labels.slice(0, share.begin, share.end);
    if (batch.labels_host.defined()) b.labels_host = batch.labels_host.slice(0, share.begin, share.end);
    b.response_tokens = mine;  // tokens stays 0: a round counts the whole batch's, on every member
    return part;
}

}  // namespace h2tune
