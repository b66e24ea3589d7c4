#include "h2tune/data/example.h"

#include <algorithm>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "h2tune/core/error.h"
#include "h2tune/core/input_file.h"

namespace h2tune {

namespace {

std::string string_field(const nlohmann::json& obj, const char* key, bool required, const std::string& path,
                         long line) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) {
        if (required) throw DataError(error_at(path, line, std::string("missing string field '") + key + "'"));
        return {};
    }
    if (!it->is_string()) throw DataError(error_at(path, line, std::string("field '") + key + "' must be a string"));
    return it->get<std::string>();
}

}  // namespace

std::vector<Example> parse_jsonl(const std::string& text, const std::string& path, int64_t limit) {
    std::vector<Example> out;
    long line = 0;
    std::size_t begin = 0;
    while (begin < text.size()) {
        std::size_t end = text.find('\n', begin);
        if (end == std::string::npos) end = text.size();
        std::string record = text.substr(begin, end - begin);
        begin = end + 1;
        ++line;
        if (!record.empty() && record.back() == '\r') record.pop_back();
        if (record.find_first_not_of(" \t") == std::string::npos) continue;
        nlohmann::json obj;
        try {
            obj = nlohmann::json::parse(record);
        } catch (const nlohmann::json::exception& e) {
            std::string why = e.what();
            auto pos = why.find("parse error");
            throw DataError(error_at(path, line, "malformed JSON: " + (pos == std::string::npos ? why : why.substr(pos))));
        }
        if (!obj.is_object()) throw DataError(error_at(path, line, "expected a JSON object per line"));
        Example ex;
        ex.instruction = string_field(obj, "instruction", true, path, line);
        ex.input = string_field(obj, "input", false, path, line);
        ex.output = string_field(obj, "output", true, path, line);
        ex.line = line;
        if (ex.output.empty()) throw DataError(error_at(path, line, "field 'output' is empty"));
        out.push_back(std::move(ex));
        if (limit > 0 && static_cast<int64_t>(out.size()) >= limit) break;
    }
    if (out.empty()) throw DataError(path + ": no examples (the file is empty)");
    return out;
}

std::vector<Example> read_jsonl(const std::string& path, int64_t limit, const std::string& what) {
    // Training data scales with the node, so the bound does too; it only has to stop a wrong path
    // (a device, a FIFO, a runaway file) from filling memory or blocking the job.
    const InputFileRule rule{what, memory_fraction_bytes(0.25)};
    return parse_jsonl(read_input_file(path, rule, InputErrorKind::kData), path, limit);
}

TaskInfo parse_task_info(const std::string& text, const std::string& path) {
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw DataError(path + ": malformed JSON: " + e.what());
    }
    TaskInfo t;
    try {
        t.name = j.at("name").get<std::string>();
        t.instruction = j.value("instruction", std::string());
        if (j.contains("labels")) t.labels = j.at("labels").get<std::vector<std::string>>();
        t.majority_rate_test = j.value("majority_rate_test", 0.0);
    } catch (const nlohmann::json::exception& e) {
        throw DataError(path + ": " + e.what());
    }
    // Accuracy is scored against the label set: a label listed twice would be one class counted
    // as two (and is always a slip in whatever wrote the file).
    std::set<std::string> seen;
    for (const auto& label : t.labels)
        if (!seen.insert(label).second)
            throw DataError(path + ": labels: '" + label + "' appears more than once");
    return t;
}

TaskInfo read_task_info(const std::string& path) {
    const InputFileRule rule{"task file", 16ull << 20};
    return parse_task_info(read_input_file(path, rule, InputErrorKind::kData), path);
}

double majority_rate(const std::vector<Example>& examples) {
    if (examples.empty()) return 0.0;
    std::map<std::string, int64_t> counts;
    int64_t best = 0;
    for (const auto& e : examples) best = std::max(best, ++counts[e.output]);
    return static_cast<double>(best) / static_cast<double>(examples.size());
}

std::vector<std::string> distinct_outputs(const std::vector<Example>& examples) {
    std::vector<std::string> out;
    for (const auto& e : examples)
        if (std::find(out.begin(), out.end(), e.output) == out.end()) out.push_back(e.output);
    return out;
}

std::vector<std::string> split_labels(const std::string& text) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= text.size()) {
        size_t end = text.find(',', start);
        if (end == std::string::npos) end = text.size();
        std::string item = text.substr(start, end - start);
        const auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
        if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
        start = end + 1;
    }
    return out;
}

std::string prompt_head(const Example& example) {
    std::string s = "### Instruction:\n" + example.instruction;
    if (!example.input.empty()) s += "\n\n### Input:\n" + example.input;
    return s;
}

std::string prompt_tail() { return "\n\n### Response:\n"; }

}  // namespace h2tune
