// Instruction-style examples (the Alpaca shape users bring as JSONL) and task descriptions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace h2tune {

struct Example {
    std::string instruction;
    std::string input;   // may be empty
    std::string output;  // the response (for classification tasks: the label)
    long line = 0;       // 1-based line in the source file, for error messages
};

// Parses JSONL text: one JSON object per line with string fields `instruction` and `output` and
// an optional string `input`; blank lines are skipped; other fields are ignored. A malformed line
// throws DataError naming `source` and the line. `limit` > 0 keeps the first `limit` examples.
std::vector<Example> parse_jsonl(const std::string& text, const std::string& source, int64_t limit = 0);

// Reads a JSONL file as parse_jsonl does. Only a regular file of at most a quarter of the node's
// memory is read (a FIFO or /dev/zero is refused, not read for ever); `what` names the file's
// role in those messages ("training file", "test file").
std::vector<Example> read_jsonl(const std::string& path, int64_t limit = 0, const std::string& what = "JSONL file");

// A task's metadata as written by scripts/prepare_data.py (task.json): name, label set, counts.
struct TaskInfo {
    std::string name;
    std::string instruction;
    std::vector<std::string> labels;  // empty for open-ended (generation-only) tasks
    double majority_rate_test = 0.0;  // share of the most frequent label in the test split
};
// Parses task.json text; `source` names it in errors. Throws DataError for malformed JSON, a
// missing name, a label that is not a string or one that appears twice.
TaskInfo parse_task_info(const std::string& text, const std::string& source);
// Reads task.json (a regular file of at most 16 MiB) with parse_task_info.
TaskInfo read_task_info(const std::string& path);

// Share of the most frequent `output` among the examples (the majority-class accuracy); 0 if empty.
double majority_rate(const std::vector<Example>& examples);
// The distinct outputs in first-seen order (a label set for user JSONL without task.json).
std::vector<std::string> distinct_outputs(const std::vector<Example>& examples);

// A comma-separated label list ("spam, ham" -> {"spam", "ham"}); blanks around labels are dropped.
std::vector<std::string> split_labels(const std::string& text);

// The prompt template shared by training and evaluation; the response follows it directly.
// Split in two so that over-long inputs can be truncated without losing the response marker.
std::string prompt_head(const Example& example);  // instruction and input
std::string prompt_tail();                         // the response marker

}  // namespace h2tune
