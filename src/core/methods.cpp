#include "h2tune/core/methods.h"

#include <algorithm>

#include "h2tune/core/error.h"

namespace h2tune {

namespace {

std::vector<MethodSpec> build_table() {
    using F = MethodFamily;
    const std::string h2_exchange = "up: relation Pi_k and T values at its mask (masks once); down: its bank slices";
    const auto lora = [](std::string name, std::string exchange, LoraExchange x) {
        MethodSpec m{std::move(name), F::kLoraBaseline, std::move(exchange), false, x, {}};
        return m;
    };
    const auto ablation = [&](std::string name, std::vector<ImpliedSetting> implies) {
        return MethodSpec{std::move(name), F::kH2Tune, h2_exchange, false, {}, std::move(implies)};
    };
    return {
        {"local", F::kLocal, "nothing: each client trains its own LoRA alone", false, {}, {}},
        {"h2tune", F::kH2Tune, h2_exchange, false, {}, {}},
        {"h2tune-dense", F::kH2Tune, "up: whole personalised R x R matrices; down: the whole bank", true, {}, {}},
        lora("fedit", "up and down: A and B (FedAvg within groups of equal rank)", {true, true, false, false, true}),
        lora("ffa", "up and down: B; A frozen at its shared initialisation", {false, true, true, false, true}),
        lora("fedsa", "up and down: A; B stays private", {true, false, false, false, true}),
        lora("hetlora", "up: A and B; down: the zero-padded average, truncated to the client's rank",
             {true, true, false, false, false}),
        lora("flexlora", "up: A and B; down: the SVD of the averaged product at the client's rank",
             {true, true, false, false, false}),
        lora("flora", "up: A and B; down: the stacked factors, merged into W0 before a fresh LoRA",
             {true, true, false, true, false}),
        // H2Tune ablations: no sparsification, fixed depth or end alignment, no alternation.
        ablation("h2tune-full-rank", {{"client.*.rank", "=federation.max_rank"}}),
        ablation("h2tune-depth", {{"federation.align", "depth"}}),
        ablation("h2tune-end", {{"federation.align", "end"}}),
        ablation("h2tune-joint", {{"federation.alternate", "none"}}),
    };
}

}  // namespace

const std::vector<MethodSpec>& method_table() {
    static const std::vector<MethodSpec> table = build_table();
    return table;
}

const std::vector<std::string>& known_methods() {
    static const std::vector<std::string> names = [] {
        std::vector<std::string> out;
        for (const auto& m : method_table()) out.push_back(m.name);
        return out;
    }();
    return names;
}

const MethodSpec& method_spec(const std::string& name) {
    for (const auto& m : method_table())
        if (m.name == name) return m;
    std::string list;
    for (const auto& n : known_methods()) list += (list.empty() ? "" : ", ") + n;
    throw ConfigError("run.method = '" + name + "': unknown method (known: " + list + ")");
}

int method_order(const std::string& name) {
    const auto& names = known_methods();
    return static_cast<int>(std::find(names.begin(), names.end(), name) - names.begin());
}

std::set<std::string> method_implied_keys(const std::string& name, int64_t clients) {
    std::set<std::string> keys;
    const auto& table = method_table();
    auto it = std::find_if(table.begin(), table.end(), [&](const MethodSpec& m) { return m.name == name; });
    if (it == table.end()) return keys;
    for (const auto& s : it->implies) {
        if (s.key.compare(0, 9, "client.*.") == 0) {
            for (int64_t k = 0; k < clients; ++k) keys.insert("client." + std::to_string(k) + s.key.substr(8));
        } else {
            keys.insert(s.key);
        }
    }
    return keys;
}

}  // namespace h2tune
