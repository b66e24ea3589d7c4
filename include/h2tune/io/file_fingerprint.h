// Fingerprints of the files a run depends on but does not own (the base model's weights, config
// and tokenizer), recorded in each checkpoint so that a resume notices when they were replaced:
// adapters trained on one base are meaningless on another, and nothing else would say so.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace h2tune {

// "size:checksum" of one file. Files up to 64 MiB are hashed whole (FNV-1a 64); larger ones by
// their size, first and last MiB and 32 evenly spaced 64 KiB blocks, so that a 16 GB checkpoint
// costs 4 MiB of reads, not a pass over the file. Throws IoError when the file cannot be read.
std::string file_fingerprint(const std::string& path);

// One line per file: "<name> <size:checksum>", for the weight files (*.safetensors, sorted),
// config.json of `model_dir` and the tokenizer file.
std::string model_fingerprint(const std::string& model_dir, const std::string& tokenizer_path);

// The first file whose fingerprint differs between two model_fingerprint texts, described for a
// message ("model.safetensors: size:checksum 540032:1a2b... then, 540032:9f8e... now"); empty
// when they agree.
std::string fingerprint_difference(const std::string& recorded, const std::string& current);

}  // namespace h2tune
