// The round protocol's codec: every message round-trips, and truncation, a wrong version or
// kind, wrong lengths and garbage are refused with MessageError naming the message kind.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "h2tune/app/fault_injection.h"
#include "h2tune/app/federated_run.h"
#include "h2tune/app/round_messages.h"
#include "h2tune/core/error.h"

using namespace h2tune;

namespace {

const BankShape kShape{4, 3, 6};  // L_g, M, R

torch::Tensor ascending_masks(int64_t modules, int64_t entries, int64_t offset = 0) {
    return (torch::arange(entries, torch::kInt64) * 2 + offset).unsqueeze(0).repeat({modules, 1}).contiguous();
}

UploadRecord bank_record(int client, bool taylor) {
    UploadRecord u;
    u.client = client;
    u.row.train_loss = 1.25;
    u.row.test_accuracy = 0.5;
    u.row.tokens = 4096;
    u.row.bytes_down = 321;
    u.row.participated = 1;
    u.values = MethodFamily::kH2Tune;
    u.bank.client = client;
    u.bank.samples = 17;
    u.bank.rank = 2;
    u.bank.relation = torch::softmax(torch::randn({kShape.global_layers, 3}), 0);
    u.bank.values = torch::randn({3, kShape.modules, 4});
    if (taylor) {
        u.bank.taylor = torch::rand({kShape.modules, 4});
        u.bank.grad_scale = torch::rand({kShape.modules});
    }
    return u;
}

UploadLayout bank_layout(bool dense = false) {
    return UploadLayout{MethodFamily::kH2Tune, kShape.global_layers, kShape.modules, kShape.max_rank, dense};
}

// Runs `f` and expects a MessageError whose text contains `needle`.
template <class F>
void expect_message_error(F f, const std::string& needle) {
    try {
        f();
        FAIL() << "no MessageError (expected one mentioning '" << needle << "')";
    } catch (const MessageError& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
}

}  // namespace

TEST(RoundMessages, MetricColumnsNameEveryDatasetOnce) {
    const auto& names = client_metric_names();
    ASSERT_EQ(names.size(), metric_columns().size());
    EXPECT_EQ(names.front(), "train_loss");
    EXPECT_EQ(names.back(), "test_accuracy_no_middle");
    for (size_t i = 0; i < names.size(); ++i)
        for (size_t j = i + 1; j < names.size(); ++j) EXPECT_NE(names[i], names[j]);
}

TEST(RoundMessages, UploadRecordRoundTripsWithAndWithoutTaylor) {
    for (bool taylor : {false, true}) {
        const UploadRecord u = bank_record(2, taylor);
        const Bytes bytes = encode_upload_record(u);
        UploadRecord d = decode_upload_header(bytes);
        EXPECT_EQ(d.client, 2);
        EXPECT_DOUBLE_EQ(d.row.train_loss, 1.25);
        EXPECT_DOUBLE_EQ(d.row.tokens, 4096);
        EXPECT_DOUBLE_EQ(d.row.bytes_down, 321);
        EXPECT_NE(d.values, MethodFamily::kLocal);
        decode_upload_values(bytes, bank_layout(), d);
        EXPECT_EQ(d.bank.rank, 2);
        EXPECT_DOUBLE_EQ(d.bank.samples, 17);
        EXPECT_TRUE(torch::equal(d.bank.relation, u.bank.relation));
        EXPECT_TRUE(torch::equal(d.bank.values, u.bank.values));
        EXPECT_EQ(d.bank.taylor.defined(), taylor);
        if (taylor) {
            EXPECT_TRUE(torch::equal(d.bank.grad_scale, u.bank.grad_scale));
        }
        // The values' bytes: everything after the header (client, the metrics, flag).
        EXPECT_DOUBLE_EQ(d.value_bytes, static_cast<double>(bytes.size() - upload_header_bytes()));
    }
}

TEST(RoundMessages, LocalAndLoraRecordsRoundTrip) {
    UploadRecord local;
    local.client = 0;
    local.row.test_accuracy = std::nan("");
    const Bytes lb = encode_upload_record(local);
    const UploadRecord ld = decode_upload_header(lb);
    EXPECT_EQ(ld.values, MethodFamily::kLocal);
    EXPECT_TRUE(std::isnan(ld.row.test_accuracy));

    UploadRecord lora;
    lora.client = 1;
    lora.values = MethodFamily::kLoraBaseline;
    lora.lora.samples = 9;
    lora.lora.factors["A/0"] = torch::randn({2, 5});
    lora.lora.factors["B/0"] = torch::randn({5, 2});
    const Bytes bytes = encode_upload_record(lora);
    UploadRecord d = decode_upload_header(bytes);
    decode_upload_values(bytes, UploadLayout{MethodFamily::kLoraBaseline, 0, 0, 0, false}, d);
    EXPECT_EQ(d.lora.client, 1);
    EXPECT_DOUBLE_EQ(d.lora.samples, 9);
    ASSERT_EQ(d.lora.factors.size(), 2u);
    EXPECT_TRUE(torch::equal(d.lora.factors.at("B/0"), lora.lora.factors.at("B/0")));
}

TEST(RoundMessages, TruncatedOrPaddedUploadValuesAreRefused) {
    const Bytes bytes = encode_upload_record(bank_record(1, true));
    for (size_t cut : {size_t{1}, size_t{7}, size_t{40}, bytes.size() - upload_header_bytes() - 1}) {
        Bytes shorter(bytes.begin(), bytes.end() - static_cast<long>(cut));
        UploadRecord d = decode_upload_header(shorter);
        expect_message_error([&] { decode_upload_values(shorter, bank_layout(), d); }, "upload record");
    }
    Bytes longer = bytes;
    longer.push_back(0);
    UploadRecord d = decode_upload_header(longer);
    expect_message_error([&] { decode_upload_values(longer, bank_layout(), d); }, "trailing bytes");
    expect_message_error([&] { (void)decode_upload_header(Bytes(bytes.begin(), bytes.begin() + 50)); }, "truncated");
}

TEST(RoundMessages, UploadClaimingAnImpossibleRankOrLayoutIsRefused) {
    UploadRecord u = bank_record(0, false);
    u.bank.rank = kShape.max_rank + 1;
    Bytes bytes = encode_upload_record(u);
    UploadRecord d = decode_upload_header(bytes);
    expect_message_error([&] { decode_upload_values(bytes, bank_layout(), d); }, "claims rank 7");
    // A dense layout expects R*R entries per module: the sparse record does not fit it.
    bytes = encode_upload_record(bank_record(0, false));
    d = decode_upload_header(bytes);
    expect_message_error([&] { decode_upload_values(bytes, bank_layout(true), d); }, "expected");
}

TEST(RoundMessages, EnvelopeRefusesOtherVersionsKindsAndGarbage) {
    RoundReport report;
    report.round = 3;
    report.stop_requested = true;
    report.records = {Bytes{1, 2, 3}, Bytes{}, Bytes(300, 7)};
    const Bytes bytes = encode_report(report);
    const RoundReport back = decode_report(bytes, "rank 2");
    EXPECT_EQ(back.round, 3);
    EXPECT_TRUE(back.stop_requested);
    EXPECT_FALSE(back.interrupted);
    ASSERT_EQ(back.records.size(), 3u);
    EXPECT_EQ(back.records[2], Bytes(300, 7));

    Bytes version = bytes;
    version[4] = 9;  // the protocol version follows the 4-byte magic
    expect_message_error([&] { decode_report(version, "rank 2"); }, "round report from rank 2: protocol version");
    Bytes magic = bytes;
    magic[0] ^= 0xff;
    expect_message_error([&] { decode_report(magic, "rank 2"); }, "bad magic");
    expect_message_error([&] { decode_decision(bytes, 3); }, "got a round report message");
    expect_message_error([&] { decode_report(Bytes(3, 0), "rank 1"); }, "not a message");
    Bytes cut(bytes.begin(), bytes.end() - 5);
    expect_message_error([&] { decode_report(cut, "rank 2"); }, "round report from rank 2");

    // Random garbage never decodes into anything silently wrong: it throws MessageError.
    std::mt19937 rng(7);
    for (int i = 0; i < 200; ++i) {
        Bytes junk(static_cast<size_t>(rng() % 64));
        for (auto& b : junk) b = static_cast<uint8_t>(rng());
        EXPECT_THROW(decode_report(junk, "rank 1"), MessageError);
        EXPECT_THROW(decode_upload_header(junk), MessageError);
    }
}

TEST(RoundMessages, DecisionIsCheckedForItsRoundAndAction) {
    RoundDecision d;
    d.round = 4;
    d.action = RoundDecision::kStopAfterRound;
    d.checkpoint = true;
    const Bytes bytes = encode_decision(d);
    const RoundDecision back = decode_decision(bytes, 4);
    EXPECT_EQ(back.action, RoundDecision::kStopAfterRound);
    EXPECT_TRUE(back.checkpoint);
    expect_message_error([&] { decode_decision(bytes, 5); }, "for round 4 in round 5");
    Bytes bad = bytes;
    bad[bad.size() - 2] = 9;
    expect_message_error([&] { decode_decision(bad, 4); }, "unknown action 9");
}

TEST(RoundMessages, DownloadsRoundTripWithTheirRecordSizes) {
    DownloadRecord a, b;
    a.client = 0;
    a.bank.values = torch::randn({kShape.global_layers, kShape.modules, 4});
    b.client = 3;
    b.bank.new_masks = ascending_masks(kShape.modules, 4, 1);
    b.bank.values = torch::randn({kShape.global_layers, kShape.modules, 4});
    const Bytes bytes = encode_download(MethodFamily::kH2Tune, {a, b});
    const auto layout = [](int) { return BankLayout{kShape.global_layers, kShape.modules, 4, kShape.max_rank, false}; };
    const auto back = decode_download(bytes, MethodFamily::kH2Tune, layout);
    ASSERT_EQ(back.size(), 2u);
    EXPECT_FALSE(back[0].bank.new_masks.defined());
    EXPECT_TRUE(torch::equal(back[1].bank.new_masks, b.bank.new_masks));
    EXPECT_TRUE(torch::equal(back[1].bank.values, b.bank.values));
    // Client id + flag + counted float array; the new masks add a counted int32 array.
    const double plain = 4 + 1 + 8 + 4.0 * kShape.global_layers * kShape.modules * 4;
    EXPECT_DOUBLE_EQ(back[0].bytes, plain);
    EXPECT_DOUBLE_EQ(back[1].bytes, plain + 8 + 4.0 * kShape.modules * 4);
    expect_message_error([&] { decode_download(bytes, MethodFamily::kLoraBaseline, layout); }, "another method family");
    const auto wrong = [](int) { return BankLayout{kShape.global_layers, kShape.modules, 9, kShape.max_rank, false}; };
    expect_message_error([&] { decode_download(bytes, MethodFamily::kH2Tune, wrong); }, "download from rank 0");

    DownloadRecord l;
    l.client = 2;
    l.lora["stackA/1"] = torch::randn({3, 5});
    const auto lb = decode_download(encode_download(MethodFamily::kLoraBaseline, {l}), MethodFamily::kLoraBaseline, layout);
    ASSERT_EQ(lb.size(), 1u);
    EXPECT_TRUE(torch::equal(lb[0].lora.at("stackA/1"), l.lora.at("stackA/1")));
}

// Regression: tensor shapes in a message were multiplied unchecked, so four dimensions of 2^31
// wrapped to 0 elements, and an expected count of 0 disabled the length check: a one-float array
// then stood for a tensor of 2^124 elements. An empty tensor must now arrive empty too.
TEST(RoundMessages, TensorShapesThatOverflowOrDisagreeWithTheArrayAreRefused) {
    DownloadRecord d;
    d.client = 0;
    d.lora = {{"A/0", torch::zeros({1, 1, 1, 1})}};
    Bytes bytes = encode_download(MethodFamily::kLoraBaseline, {d});
    // envelope 7, family 1, client 4, tensor count 4, name 8 + 3, dimension count 1: the 4 dims follow.
    const size_t dims_at = 7 + 1 + 4 + 4 + 8 + 3 + 1;
    ASSERT_EQ(bytes[dims_at - 1], 4);
    for (size_t i = 0; i < 4; ++i) {
        const int64_t dim = int64_t{1} << 31;
        std::memcpy(bytes.data() + dims_at + 8 * i, &dim, sizeof dim);
    }
    const auto no_layout = [](int) -> BankLayout { throw MessageError("no H2Tune layout"); };
    expect_message_error([&] { decode_download(bytes, MethodFamily::kLoraBaseline, no_layout); }, "too large");

    d.lora = {{"A/0", torch::zeros({0, 3})}};
    bytes = encode_download(MethodFamily::kLoraBaseline, {d});
    EXPECT_EQ(decode_download(bytes, MethodFamily::kLoraBaseline, no_layout).at(0).lora.at("A/0").sizes().vec(),
              (std::vector<int64_t>{0, 3}));
    // The same record claiming two values for its empty tensor.
    const size_t count_at = 7 + 1 + 4 + 4 + 8 + 3 + 1 + 2 * 8;
    const uint64_t two = 2;
    std::memcpy(bytes.data() + count_at, &two, sizeof two);
    bytes.resize(bytes.size() + 2 * sizeof(float), 0);
    expect_message_error([&] { decode_download(bytes, MethodFamily::kLoraBaseline, no_layout); },
                         "array of 2 elements, expected 0");
    expect_message_error([&] { decode_lora_groups(encode_lora_groups({0}), 0); }, "array of 1 elements, expected 0");
}

TEST(RoundMessages, StartOfRunMessagesRoundTrip) {
    MaskAnnouncement m{1, ascending_masks(kShape.modules, 4), 0};
    const auto masks = decode_mask_announcements(encode_mask_announcements({m}), "rank 1", 2, kShape);
    ASSERT_EQ(masks.size(), 1u);
    EXPECT_TRUE(torch::equal(masks[0].masks, m.masks));
    EXPECT_DOUBLE_EQ(masks[0].bytes, 4 + 8 + 8 + 8 + 4.0 * kShape.modules * 4);
    expect_message_error([&] { decode_mask_announcements(encode_mask_announcements({m}), "rank 1", 1, kShape); },
                         "client 1 of a job with 1");
    expect_message_error([&] { decode_mask_announcements(encode_mask_announcements({m}), "rank 1", 2, BankShape{4, 2, 6}); },
                         "for a bank of 2 modules");

    LoraDescription d{0, "h64-l2", 0.5, {{"A/0", {2, 64}}, {"B/0", {64, 2}}}};
    const auto ds = decode_lora_descriptions(encode_lora_descriptions({d}), "rank 0", 1);
    ASSERT_EQ(ds.size(), 1u);
    EXPECT_EQ(ds[0].signature, "h64-l2");
    EXPECT_EQ(ds[0].factor_shapes.at("B/0"), (std::vector<int64_t>{64, 2}));
    EXPECT_EQ(decode_lora_groups(encode_lora_groups({0, -1, 0}), 3), (std::vector<int>{0, -1, 0}));
    expect_message_error([&] { decode_lora_groups(encode_lora_groups({0, -1}), 3); }, "expected 3");

    ClientInfo info;
    info.client = 1;
    info.majority_rate = 0.75;
    info.rank = 8;
    info.steps_per_round = 40;
    info.device = -1;
    info.base_model_clients = 3;
    info.host_resident_bytes = 123456789;
    info.group_ranks = 2;
    info.base_model = "model.safetensors 3678664:57b63fda47b71314\nconfig.json 10:1\n";
    const auto infos = decode_client_infos(encode_client_infos({info, info}), "rank 1", 2);
    ASSERT_EQ(infos.size(), 2u);
    EXPECT_DOUBLE_EQ(infos[0].majority_rate, 0.75);
    EXPECT_EQ(infos[0].steps_per_round, 40);
    EXPECT_EQ(infos[1].base_model_clients, 3);
    EXPECT_EQ(infos[1].host_resident_bytes, 123456789);
    EXPECT_EQ(infos[1].group_ranks, 2);
    EXPECT_EQ(infos[1].base_model, info.base_model);
    ASSERT_EQ(client_info_columns().size(), 12u);
    EXPECT_EQ(client_info_columns().back().first, "group_ranks");
    EXPECT_DOUBLE_EQ(client_info_columns().back().second(infos[1]), 2.0);
    EXPECT_EQ(client_info_columns().front().first, "majority_rate");
    EXPECT_DOUBLE_EQ(client_info_columns()[1].second(infos[0]), 8.0);

    CheckpointChoice c;
    c.found = true;
    c.info.dir = "runs/x/checkpoints/r000002.1";
    c.info.next_round = 2;
    c.info.in_progress = true;
    const CheckpointChoice cb = decode_checkpoint_choice(encode_checkpoint_choice(c));
    EXPECT_TRUE(cb.found);
    EXPECT_EQ(cb.info.dir, c.info.dir);
    EXPECT_TRUE(cb.info.in_progress);
    const auto files = decode_checkpoint_files(encode_checkpoint_files({{"client_0000.h5", 10, 99}}), "rank 0");
    ASSERT_EQ(files.size(), 1u);
    EXPECT_EQ(files[0].checksum, 99u);
}

TEST(FaultInjection, CorruptsDecodedRecordsNotTheCodec) {
    FaultInjection nan{"nan", 2, 1, 0};
    UploadRecord u = bank_record(2, false);
    nan.corrupt(u, 0);  // another round: untouched
    EXPECT_TRUE(torch::isfinite(u.bank.values).all().item<bool>());
    nan.corrupt(u, 1);
    EXPECT_FALSE(torch::isfinite(u.bank.values).all().item<bool>());

    FaultInjection rank{"rank", 0, -1, 0};
    UploadRecord r = bank_record(0, false);
    rank.corrupt(r, 5);
    EXPECT_EQ(r.bank.rank, 5);  // r^2 + 1

    FaultInjection truncate{"truncate", 1, 0, 0};
    Bytes bytes = encode_upload_record(bank_record(1, false));
    const size_t n = bytes.size();
    truncate.corrupt_encoded(bytes, 1, 0);
    EXPECT_EQ(bytes.size(), n - 7);

    FaultInjection index{"index", 1, -1, 0};
    MaskAnnouncement m{1, ascending_masks(kShape.modules, 4), 0};
    const torch::Tensor before = m.masks.clone();
    index.corrupt(m, kShape.max_rank);
    EXPECT_GE(m.masks.max().item<int64_t>(), kShape.max_rank * kShape.max_rank);
    EXPECT_TRUE(torch::equal(before.select(1, 0), m.masks.select(1, 0)));
}

TEST(FederatedRun, ParticipantsAreDrawnFromSeedAndRoundAndNeverNone) {
    JobConfig job;
    job.run.seed = 11;
    job.clients.resize(12);
    job.federation.participation = 0.5;
    const auto round3 = sample_participants(job, 3);
    EXPECT_EQ(std::count(round3.begin(), round3.end(), true), 6);
    EXPECT_EQ(sample_participants(job, 3), round3);  // a function of (seed, round) alone
    bool differs = false;
    for (int r = 0; r < 8; ++r) differs = differs || sample_participants(job, r) != round3;
    EXPECT_TRUE(differs);
    job.federation.participation = 0.01;
    const auto one = sample_participants(job, 0);
    EXPECT_EQ(std::count(one.begin(), one.end(), true), 1);
    job.federation.participation = 1.0;
    const auto all = sample_participants(job, 5);
    EXPECT_EQ(std::count(all.begin(), all.end(), true), 12);
}
