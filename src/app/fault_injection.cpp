#include "h2tune/app/fault_injection.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdlib>

#include "h2tune/core/error.h"

namespace h2tune {

FaultInjection FaultInjection::from_environment() {
    FaultInjection f;
    const char* spec = std::getenv("H2TUNE_INJECT_FAULT");
    if (!spec || !*spec) return f;
    const std::string s = spec;
    auto a = s.find(':'), b = s.find(':', a == std::string::npos ? a : a + 1);
    if (a == std::string::npos || b == std::string::npos)
        throw ConfigError("H2TUNE_INJECT_FAULT: expected KIND:CLIENT:ROUND, got '" + s + "'");
    f.kind = s.substr(0, a);
    try {
        f.client = std::stoi(s.substr(a + 1, b - a - 1));
        f.round = std::stoi(s.substr(b + 1));
    } catch (const std::exception&) {
        throw ConfigError("H2TUNE_INJECT_FAULT: expected KIND:CLIENT:ROUND with integers, got '" + s + "'");
    }
    if (f.kind != "nan" && f.kind != "explode" && f.kind != "truncate" && f.kind != "rank" && f.kind != "index" &&
        f.kind != "stall" && f.kind != "version")
        throw ConfigError("H2TUNE_INJECT_FAULT: unknown kind '" + f.kind + "'");
    if (f.kind == "stall") {
        const char* seconds = std::getenv("H2TUNE_STALL_SECONDS");
        f.stall_seconds = seconds ? std::atof(seconds) : 5.0;
    }
    return f;
}

bool FaultInjection::hits(int k, int r) const { return !kind.empty() && k == client && (round < 0 || r == round); }

double FaultInjection::stall_after_training(int k, int r) const {
    return kind == "stall" && hits(k, r) ? stall_seconds : 0.0;
}

void FaultInjection::corrupt(MaskAnnouncement& a, int64_t max_rank) const {
    if (kind != "index" || a.client != client) return;
    a.masks = a.masks.clone();
    a.masks[0][a.masks.size(1) - 1] = max_rank * max_rank + 5;  // past R*R
}

void FaultInjection::corrupt(UploadRecord& u, int r) const {
    if (!hits(u.client, r) || u.values == MethodFamily::kLocal) return;
    if (u.values == MethodFamily::kLoraBaseline) {
        if (kind == "nan" && !u.lora.factors.empty()) u.lora.factors.begin()->second.view({-1})[0] = std::nanf("");
        if (kind == "explode")
            for (auto& kv : u.lora.factors) kv.second.mul_(1e8);
        return;
    }
    if (kind == "nan") u.bank.values.view({-1})[0] = std::nanf("");
    if (kind == "explode") u.bank.values.mul_(1e8);
    if (kind == "rank") u.bank.rank = u.bank.rank * u.bank.rank + 1;
}

void FaultInjection::corrupt_encoded(Bytes& record, int k, int r) const {
    if (kind == "truncate" && hits(k, r)) record.resize(record.size() - 7);
}

void FaultInjection::corrupt_report(Bytes& message, int rank, int r) const {
    // The protocol version is the little-endian uint16 after the 4-byte magic.
    if (kind == "version" && hits(rank, r) && message.size() > 5) message[4] = 99;
}

}  // namespace h2tune
