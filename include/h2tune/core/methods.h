// The one table of methods `h2tune train` runs: each entry says which family it belongs to, what
// its clients exchange with rank 0, which job settings it implies (the H2Tune ablations are
// H2Tune with one setting changed) and where `h2tune report` lists it. The job config, the run
// and the report all read this table; adding a method is one entry here plus, for a new LoRA
// baseline, its aggregation rule (method/baselines.h, method/lora_server.cpp).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace h2tune {

enum class MethodFamily {
    kLocal,         // nothing leaves the clients
    kH2Tune,        // sparse shared middle matrices through rank 0's bank (method/)
    kLoraBaseline,  // LoRA factors averaged by rank 0 within groups of equal architecture
};

// What a LoRA baseline exchanges per adapted module ("A/<i>", "B/<i>"; FLoRA downloads
// "stackA/<i>", "stackB/<i>" to merge into W0).
struct LoraExchange {
    bool upload_A = false, upload_B = false;
    bool freeze_A = false;        // FFA-LoRA: A stays at its shared initialisation
    bool merge = false;           // FLoRA: merge the stack into W0, then restart the LoRA
    bool groups_by_rank = false;  // only clients of equal rank aggregate (factors of equal shape)
};

// A job setting a method implies. `key` "client.*.<field>" applies to every client; a `value`
// that starts with '=' copies another key's value (e.g. "=federation.max_rank").
struct ImpliedSetting {
    std::string key, value;
};

struct MethodSpec {
    std::string name;
    MethodFamily family = MethodFamily::kLocal;
    std::string exchange;  // what a participating client uploads and downloads, in words
    bool dense = false;    // H2Tune: the whole bank down, whole R x R matrices up (reference traffic)
    LoraExchange lora;     // LoRA baselines
    std::vector<ImpliedSetting> implies;
};

// Every method, in the order `h2tune report` lists them.
const std::vector<MethodSpec>& method_table();
// The entry of `name`; throws ConfigError naming run.method and the known methods.
const MethodSpec& method_spec(const std::string& name);
// Names of the methods `run.method` accepts, in table order.
const std::vector<std::string>& known_methods();
// Position of `name` in the table (unknown names sort last).
int method_order(const std::string& name);
// The keys `name` sets by itself for a job of `clients` clients (report: not part of the scenario).
std::set<std::string> method_implied_keys(const std::string& name, int64_t clients);

}  // namespace h2tune
