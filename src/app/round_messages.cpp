#include "h2tune/app/round_messages.h"

#include <torch/torch.h>

#include <cmath>

#include "h2tune/core/error.h"
#include "h2tune/core/wire.h"

namespace h2tune {

namespace {

constexpr uint32_t kMagic = 0x4d543248;  // "H2TM" little-endian

// ------------------------------------------------------------------ envelope

ByteWriter open_message(MessageKind kind) {
    ByteWriter w;
    w.put<uint32_t>(kMagic);
    w.put<uint16_t>(kProtocolVersion);
    w.put<uint8_t>(static_cast<uint8_t>(kind));
    return w;
}

// A reader positioned after a checked envelope; errors name the kind and where it came from.
ByteReader read_message(const Bytes& message, MessageKind kind, const std::string& from) {
    const std::string what = message_kind_name(kind) + (from.empty() ? "" : " from " + from);
    ByteReader r(message.data(), message.size(), what);
    if (message.size() < 7) throw MessageError(what + ": " + std::to_string(message.size()) + " bytes, not a message");
    if (r.get<uint32_t>() != kMagic) throw MessageError(what + ": not an h2tune message (bad magic)");
    const auto version = r.get<uint16_t>();
    if (version != kProtocolVersion)
        throw MessageError(what + ": protocol version " + std::to_string(version) + ", this build speaks " +
                           std::to_string(kProtocolVersion) + " (ranks run different builds?)");
    const auto got = static_cast<MessageKind>(r.get<uint8_t>());
    if (got != kind) throw MessageError(what + ": got a " + message_kind_name(got) + " message instead");
    return r;
}

void expect_end(const ByteReader& r, const std::string& what) {
    if (!r.done()) throw MessageError(what + ": trailing bytes");
}

size_t checked_client(int64_t k, size_t num_clients, const std::string& what) {
    if (k < 0 || static_cast<size_t>(k) >= num_clients)
        throw MessageError(what + ": client " + std::to_string(k) + " of a job with " + std::to_string(num_clients));
    return static_cast<size_t>(k);
}

// ------------------------------------------------------------------ tensors

// Elements of a tensor of `shape`. A negative dimension or a product that overflows (four
// dimensions of 2^31 wrap to 0) would let a short array stand for a huge tensor; both are refused.
size_t element_count(const std::vector<int64_t>& shape) {
    size_t n = 1;
    for (auto d : shape) {
        if (d < 0) throw MessageError("tensor shape with a negative dimension " + std::to_string(d));
        if (__builtin_mul_overflow(n, static_cast<size_t>(d), &n) || n > (size_t{1} << 40))
            throw MessageError("tensor shape too large for a message");
    }
    return n;
}

void put_tensor_f32(ByteWriter& w, const torch::Tensor& t) {
    torch::Tensor c = t.to(torch::kCPU, torch::kFloat32).contiguous();
    w.put_array(c.data_ptr<float>(), static_cast<size_t>(c.numel()));
}

torch::Tensor get_tensor_f32(ByteReader& r, std::vector<int64_t> shape) {
    auto v = r.get_array<float>(element_count(shape));
    return torch::from_blob(v.data(), shape, torch::kFloat32).clone();
}

// Mask indices travel as int32 (R*R stays far below 2^31).
void put_mask_i32(ByteWriter& w, const torch::Tensor& mask) {
    torch::Tensor c = mask.to(torch::kInt32).contiguous();
    w.put_array(c.data_ptr<int32_t>(), static_cast<size_t>(c.numel()));
}

torch::Tensor get_mask_i32(ByteReader& r, std::vector<int64_t> shape) {
    auto v = r.get_array<int32_t>(element_count(shape));
    return torch::from_blob(v.data(), shape, torch::kInt32).to(torch::kInt64);
}

// Float32 tensor maps: count, then per tensor its name, shape and values.
void put_tensor_map(ByteWriter& w, const TensorMap& tensors) {
    w.put<uint32_t>(static_cast<uint32_t>(tensors.size()));
    for (const auto& [name, t] : tensors) {
        w.put_string(name);
        torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
        w.put<uint8_t>(static_cast<uint8_t>(c.dim()));
        for (int64_t d = 0; d < c.dim(); ++d) w.put<int64_t>(c.size(d));
        w.put_array(c.data_ptr<float>(), static_cast<size_t>(c.numel()));
    }
}

TensorMap get_tensor_map(ByteReader& r, const std::string& what) {
    TensorMap out;
    const uint32_t n = r.get<uint32_t>();
    if (n > 100000) throw MessageError(what + ": tensor map of " + std::to_string(n) + " tensors");
    for (uint32_t i = 0; i < n; ++i) {
        const std::string name = r.get_string();
        const int dims = r.get<uint8_t>();
        if (dims > 4) throw MessageError(what + ": tensor '" + name + "' has " + std::to_string(dims) + " dimensions");
        std::vector<int64_t> shape(static_cast<size_t>(dims));
        for (auto& d : shape) {
            d = r.get<int64_t>();
            if (d < 0 || d > (int64_t{1} << 31)) throw MessageError(what + ": tensor '" + name + "' has a bad dimension");
        }
        auto values = r.get_array<float>(element_count(shape));
        out[name] = torch::from_blob(values.data(), shape, torch::kFloat32).clone();
    }
    return out;
}

// ------------------------------------------------------------------ upload values

void put_bank_values(ByteWriter& w, const BankUpload& u) {
    w.put<double>(u.samples);
    w.put<int64_t>(u.rank);
    w.put<int64_t>(u.relation.size(1));
    put_tensor_f32(w, u.relation);
    put_tensor_f32(w, u.values);
    w.put<uint8_t>(u.taylor.defined() ? 1 : 0);
    if (u.taylor.defined()) {
        put_tensor_f32(w, u.taylor);
        put_tensor_f32(w, u.grad_scale);
    }
}

BankUpload get_bank_values(ByteReader& r, const UploadLayout& layout, int32_t client) {
    BankUpload u;
    u.client = client;
    u.samples = r.get<double>();
    u.rank = r.get<int64_t>();
    const int64_t layers = r.get<int64_t>();
    if (u.rank < 1 || u.rank > layout.max_rank)
        throw MessageError("upload record: claims rank " + std::to_string(u.rank) + ", outside 1.." +
                           std::to_string(layout.max_rank) + " (federation.max_rank)");
    if (layers < 1 || layers > 4096)
        throw MessageError("upload record: implausible layer count " + std::to_string(layers));
    const int64_t entries = layout.dense ? layout.max_rank * layout.max_rank : u.rank * u.rank;
    u.relation = get_tensor_f32(r, {layout.global_layers, layers});
    u.values = get_tensor_f32(r, {layers, layout.modules, entries});
    if (r.get<uint8_t>() != 0) {
        u.taylor = get_tensor_f32(r, {layout.modules, u.rank * u.rank});
        u.grad_scale = get_tensor_f32(r, {layout.modules});
    }
    return u;
}

}  // namespace

size_t upload_header_bytes() { return sizeof(int32_t) + metric_columns().size() * sizeof(double) + sizeof(uint8_t); }

std::string message_kind_name(MessageKind kind) {
    switch (kind) {
        case MessageKind::kMaskAnnouncement: return "mask announcement";
        case MessageKind::kDownload: return "download";
        case MessageKind::kReport: return "round report";
        case MessageKind::kDecision: return "round decision";
        case MessageKind::kClientInfo: return "client info";
        case MessageKind::kLoraDescription: return "LoRA client description";
        case MessageKind::kLoraGroups: return "LoRA groups";
        case MessageKind::kCheckpointFiles: return "checkpoint file list";
        case MessageKind::kCheckpointChoice: return "checkpoint choice";
    }
    return "unknown message kind " + std::to_string(static_cast<int>(kind));
}

const std::vector<MetricColumn>& metric_columns() {
    using R = ClientMetricsRow;
    static const std::vector<MetricColumn> columns = {
        {"train_loss", &R::train_loss},       {"test_accuracy", &R::test_accuracy},
        {"test_accuracy_generate", &R::test_accuracy_generate},
        {"tokens", &R::tokens},               {"bytes_up", &R::bytes_up},
        {"bytes_down", &R::bytes_down},       {"mask_density", &R::mask_density},
        {"train_seconds", &R::train_seconds}, {"eval_seconds", &R::eval_seconds},
        {"excluded", &R::excluded},           {"participated", &R::participated},
        {"mask_changed", &R::mask_changed},
        {"test_accuracy_no_download", &R::test_accuracy_no_download},
        {"test_accuracy_no_middle", &R::test_accuracy_no_middle}};
    return columns;
}

void clear_accuracies(ClientMetricsRow& row) {
    row.test_accuracy = row.test_accuracy_generate = std::nan("");
    row.test_accuracy_no_download = row.test_accuracy_no_middle = std::nan("");
}

const std::vector<std::string>& client_metric_names() {
    static const std::vector<std::string> names = [] {
        std::vector<std::string> out;
        for (const auto& c : metric_columns()) out.push_back(c.name);
        return out;
    }();
    return names;
}

// ------------------------------------------------------------------ start of a run

Bytes encode_mask_announcements(const std::vector<MaskAnnouncement>& announcements) {
    ByteWriter w = open_message(MessageKind::kMaskAnnouncement);
    for (const auto& a : announcements) {
        w.put<int32_t>(a.client);
        w.put<int64_t>(a.masks.size(0));
        w.put<int64_t>(a.masks.size(1));
        put_mask_i32(w, a.masks);  // indices < R*R: int32 halves the one-time announcement
    }
    return std::move(w.buffer());
}

std::vector<MaskAnnouncement> decode_mask_announcements(const Bytes& message, const std::string& from,
                                                        size_t num_clients, const BankShape& shape) {
    ByteReader r = read_message(message, MessageKind::kMaskAnnouncement, from);
    std::vector<MaskAnnouncement> out;
    while (!r.done()) {
        const size_t begin = r.position();
        MaskAnnouncement a;
        a.client = static_cast<int32_t>(checked_client(r.get<int32_t>(), num_clients, "mask announcement"));
        const int64_t M = r.get<int64_t>(), n = r.get<int64_t>();
        if (M != shape.modules || n < 1 || n > shape.max_rank * shape.max_rank)
            throw MessageError("mask announcement from " + from + ": masks of " + std::to_string(M) + " x " +
                               std::to_string(n) + " for a bank of " + std::to_string(shape.modules) + " modules, R = " +
                               std::to_string(shape.max_rank));
        a.masks = get_mask_i32(r, {M, n});
        a.bytes = static_cast<double>(r.position() - begin);
        out.push_back(std::move(a));
    }
    return out;
}

Bytes encode_lora_descriptions(const std::vector<LoraDescription>& descriptions) {
    ByteWriter w = open_message(MessageKind::kLoraDescription);
    for (const auto& d : descriptions) {
        w.put<int32_t>(d.client);
        w.put_string(d.signature);
        w.put<double>(d.scale);
        w.put<uint32_t>(static_cast<uint32_t>(d.factor_shapes.size()));
        for (const auto& [name, shape] : d.factor_shapes) {
            w.put_string(name);
            w.put_array(shape.data(), shape.size());
        }
    }
    return std::move(w.buffer());
}

std::vector<LoraDescription> decode_lora_descriptions(const Bytes& message, const std::string& from,
                                                      size_t num_clients) {
    ByteReader r = read_message(message, MessageKind::kLoraDescription, from);
    std::vector<LoraDescription> out;
    while (!r.done()) {
        LoraDescription d;
        d.client = static_cast<int32_t>(checked_client(r.get<int32_t>(), num_clients, "LoRA client description"));
        d.signature = r.get_string();
        d.scale = r.get<double>();
        const uint32_t n = r.get<uint32_t>();
        if (n > 100000) throw MessageError("LoRA client description from " + from + ": " + std::to_string(n) + " factors");
        for (uint32_t i = 0; i < n; ++i) {
            const std::string name = r.get_string();
            d.factor_shapes[name] = r.get_array<int64_t>();
        }
        out.push_back(std::move(d));
    }
    return out;
}

Bytes encode_lora_groups(const std::vector<int>& groups) {
    ByteWriter w = open_message(MessageKind::kLoraGroups);
    w.put_array(groups.data(), groups.size());
    return std::move(w.buffer());
}

std::vector<int> decode_lora_groups(const Bytes& message, size_t num_clients) {
    ByteReader r = read_message(message, MessageKind::kLoraGroups, "rank 0");
    std::vector<int> groups = r.get_array<int>(num_clients);
    expect_end(r, "LoRA groups");
    return groups;
}

const std::vector<std::pair<std::string, std::function<double(const ClientInfo&)>>>& client_info_columns() {
    using I = const ClientInfo&;
    static const std::vector<std::pair<std::string, std::function<double(const ClientInfo&)>>> columns = {
        {"majority_rate", [](I c) { return c.majority_rate; }},
        {"rank", [](I c) { return static_cast<double>(c.rank); }},
        {"layers", [](I c) { return static_cast<double>(c.layers); }},
        {"adapter_parameters", [](I c) { return static_cast<double>(c.adapter_parameters); }},
        {"train_examples", [](I c) { return static_cast<double>(c.train_examples); }},
        {"test_examples", [](I c) { return static_cast<double>(c.test_examples); }},
        {"steps_per_round", [](I c) { return static_cast<double>(c.steps_per_round); }},
        {"host_rank", [](I c) { return static_cast<double>(c.host_rank); }},
        {"device", [](I c) { return static_cast<double>(c.device); }},
        {"base_model_clients", [](I c) { return static_cast<double>(c.base_model_clients); }},
        {"host_resident_bytes", [](I c) { return static_cast<double>(c.host_resident_bytes); }},
        {"group_ranks", [](I c) { return static_cast<double>(c.group_ranks); }}};
    return columns;
}

Bytes encode_client_infos(const std::vector<ClientInfo>& infos) {
    ByteWriter w = open_message(MessageKind::kClientInfo);
    for (const auto& c : infos) {
        w.put<int32_t>(c.client);
        w.put<double>(c.majority_rate);
        for (int64_t v : {c.rank, c.layers, c.adapter_parameters, c.train_examples, c.test_examples, c.steps_per_round})
            w.put<int64_t>(v);
        w.put<int32_t>(c.host_rank);
        w.put<int32_t>(c.device);
        w.put<int64_t>(c.base_model_clients);
        w.put<int64_t>(c.host_resident_bytes);
        w.put<int32_t>(c.group_ranks);
        w.put_string(c.base_model);
    }
    return std::move(w.buffer());
}

std::vector<ClientInfo> decode_client_infos(const Bytes& message, const std::string& from, size_t num_clients) {
    ByteReader r = read_message(message, MessageKind::kClientInfo, from);
    std::vector<ClientInfo> out;
    while (!r.done()) {
        ClientInfo c;
        c.client = static_cast<int32_t>(checked_client(r.get<int32_t>(), num_clients, "client info"));
        c.majority_rate = r.get<double>();
        for (int64_t* v : {&c.rank, &c.layers, &c.adapter_parameters, &c.train_examples, &c.test_examples,
                           &c.steps_per_round})
            *v = r.get<int64_t>();
        c.host_rank = r.get<int32_t>();
        c.device = r.get<int32_t>();
        c.base_model_clients = r.get<int64_t>();
        c.host_resident_bytes = r.get<int64_t>();
        c.group_ranks = r.get<int32_t>();
        if (c.group_ranks < 1) throw MessageError("client info from " + from + ": group_ranks " + std::to_string(c.group_ranks));
        c.base_model = r.get_string();
        out.push_back(c);
    }
    return out;
}

// ------------------------------------------------------------------ a round

Bytes encode_download(MethodFamily family, const std::vector<DownloadRecord>& records) {
    ByteWriter w = open_message(MessageKind::kDownload);
    w.put<uint8_t>(static_cast<uint8_t>(family));
    for (const auto& d : records) {
        w.put<int32_t>(d.client);
        if (family == MethodFamily::kLoraBaseline) {
            put_tensor_map(w, d.lora);
            continue;
        }
        const bool new_masks = d.bank.new_masks.defined();
        w.put<uint8_t>(new_masks ? 1 : 0);
        if (new_masks) put_mask_i32(w, d.bank.new_masks);
        put_tensor_f32(w, d.bank.values);
    }
    return std::move(w.buffer());
}

std::vector<DownloadRecord> decode_download(const Bytes& message, MethodFamily family,
                                            const std::function<BankLayout(int client)>& layout_of) {
    ByteReader r = read_message(message, MessageKind::kDownload, "rank 0");
    if (r.get<uint8_t>() != static_cast<uint8_t>(family))
        throw MessageError("download from rank 0: for another method family");
    std::vector<DownloadRecord> out;
    while (!r.done()) {
        const size_t begin = r.position();
        DownloadRecord d;
        d.client = r.get<int32_t>();
        if (family == MethodFamily::kLoraBaseline) {
            d.lora = get_tensor_map(r, "download from rank 0");
        } else {
            const BankLayout l = layout_of(d.client);  // throws for a client this rank does not host
            if (r.get<uint8_t>() != 0) d.bank.new_masks = get_mask_i32(r, {l.modules, l.entries});
            d.bank.values =
                get_tensor_f32(r, {l.global_layers, l.modules, l.dense ? l.max_rank * l.max_rank : l.entries});
        }
        d.bytes = static_cast<double>(r.position() - begin);
        out.push_back(std::move(d));
    }
    return out;
}

Bytes encode_upload_record(const UploadRecord& u) {
    ByteWriter w;
    w.put<int32_t>(u.client);
    for (const auto& c : metric_columns()) w.put<double>(u.row.*c.field);
    w.put<uint8_t>(u.values == MethodFamily::kLocal ? 0 : 1);
    if (u.values == MethodFamily::kLoraBaseline) {
        w.put<double>(u.lora.samples);
        put_tensor_map(w, u.lora.factors);
    } else if (u.values == MethodFamily::kH2Tune) {
        put_bank_values(w, u.bank);
    }
    return std::move(w.buffer());
}

UploadRecord decode_upload_header(const Bytes& record) {
    ByteReader r(record.data(), record.size(), "upload record");
    UploadRecord u;
    u.client = r.get<int32_t>();
    for (const auto& c : metric_columns()) u.row.*c.field = r.get<double>();
    // Which family the values belong to is the run's (decode_upload_values); here only whether any follow.
    u.values = r.get<uint8_t>() != 0 ? MethodFamily::kH2Tune : MethodFamily::kLocal;
    if (u.values == MethodFamily::kLocal) expect_end(r, "upload record");
    return u;
}

void decode_upload_values(const Bytes& record, const UploadLayout& layout, UploadRecord& u) {
    const size_t header = upload_header_bytes();
    if (record.size() < header) throw MessageError("upload record: message truncated");
    ByteReader r(record.data() + header, record.size() - header, "upload record");
    u.values = layout.family;
    if (layout.family == MethodFamily::kLoraBaseline) {
        u.lora.client = u.client;
        u.lora.samples = r.get<double>();
        u.lora.factors = get_tensor_map(r, "upload record");
    } else if (layout.family == MethodFamily::kH2Tune) {
        u.bank = get_bank_values(r, layout, u.client);
    } else {
        throw MessageError("upload record: values from a client of a method that exchanges none");
    }
    expect_end(r, "upload record");
    u.value_bytes = static_cast<double>(r.position());
}

Bytes encode_report(const RoundReport& report) {
    ByteWriter w = open_message(MessageKind::kReport);
    w.put<int32_t>(report.round);
    w.put<uint8_t>(report.stop_requested ? 1 : 0);
    w.put<uint8_t>(report.interrupted ? 1 : 0);
    for (const auto& record : report.records) w.put_array(record.data(), record.size());
    return std::move(w.buffer());
}

RoundReport decode_report(const Bytes& message, const std::string& from) {
    ByteReader r = read_message(message, MessageKind::kReport, from);
    RoundReport report;
    report.round = r.get<int32_t>();
    report.stop_requested = r.get<uint8_t>() != 0;
    report.interrupted = r.get<uint8_t>() != 0;
    while (!r.done()) report.records.push_back(r.get_array<uint8_t>());
    return report;
}

Bytes encode_decision(const RoundDecision& d) {
    ByteWriter w = open_message(MessageKind::kDecision);
    w.put<int32_t>(d.round);
    w.put<uint8_t>(d.action);
    w.put<uint8_t>(d.checkpoint ? 1 : 0);
    return std::move(w.buffer());
}

RoundDecision decode_decision(const Bytes& message, int round) {
    ByteReader r = read_message(message, MessageKind::kDecision, "rank 0");
    RoundDecision d;
    d.round = r.get<int32_t>();
    d.action = r.get<uint8_t>();
    d.checkpoint = r.get<uint8_t>() != 0;
    expect_end(r, "round decision");
    if (d.round != round)
        throw MessageError("round decision from rank 0: for round " + std::to_string(d.round) + " in round " +
                           std::to_string(round));
    if (d.action > RoundDecision::kStopAfterRound)
        throw MessageError("round decision from rank 0: unknown action " + std::to_string(d.action));
    return d;
}

// ------------------------------------------------------------------ checkpoints

Bytes encode_checkpoint_files(const std::vector<CheckpointFile>& files) {
    ByteWriter w = open_message(MessageKind::kCheckpointFiles);
    for (const auto& f : files) {
        w.put_string(f.name);
        w.put<uint64_t>(f.size);
        w.put<uint64_t>(f.checksum);
    }
    return std::move(w.buffer());
}

std::vector<CheckpointFile> decode_checkpoint_files(const Bytes& message, const std::string& from) {
    ByteReader r = read_message(message, MessageKind::kCheckpointFiles, from);
    std::vector<CheckpointFile> out;
    while (!r.done()) {
        CheckpointFile f;
        f.name = r.get_string();
        f.size = r.get<uint64_t>();
        f.checksum = r.get<uint64_t>();
        out.push_back(f);
    }
    return out;
}

Bytes encode_checkpoint_choice(const CheckpointChoice& c) {
    ByteWriter w = open_message(MessageKind::kCheckpointChoice);
    w.put<uint8_t>(c.found ? 1 : 0);
    if (c.found) {
        w.put_string(c.info.dir);
        w.put<int64_t>(c.info.next_round);
        w.put<uint8_t>(c.info.in_progress ? 1 : 0);
    }
    return std::move(w.buffer());
}

CheckpointChoice decode_checkpoint_choice(const Bytes& message) {
    ByteReader r = read_message(message, MessageKind::kCheckpointChoice, "rank 0");
    CheckpointChoice c;
    c.found = r.get<uint8_t>() != 0;
    if (c.found) {
        c.info.dir = r.get_string();
        c.info.next_round = r.get<int64_t>();
        c.info.in_progress = r.get<uint8_t>() != 0;
    }
    expect_end(r, "checkpoint choice");
    return c;
}

}  // namespace h2tune
