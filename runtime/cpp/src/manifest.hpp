// manifest.json, read and checked exactly as runtime/manifest.py reads it (same fields, same order of
// checks, same messages).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace mtst::detail {

enum class Precision { Fp32, Fp16, Int8Dynamic, Int8Static, Int8StaticCpu };
enum class Layout { Single, Split, Heads };
enum class HeadKind { Sentence, Token, Embedding };

const char* to_string(Precision p);
const char* to_string(Layout l);
const char* to_string(HeadKind k);

struct HeadInfo {
    std::string name;
    HeadKind kind;
    std::string output;               // graph output name
    std::vector<std::string> labels;  // index order
    // calibration (runtime/manifest.py HeadInfo): scores are softmax(logits / temperature); a sentence head
    // abstains under its threshold, a token head drops entities scored under it
    double temperature = 1.0;
    double threshold = 0.0;
};

struct Variant {
    Precision precision;
    Layout layout;
    std::map<std::string, std::string> graphs;  // role -> file name
    int opset;
    std::string key() const { return std::string(to_string(precision)) + "/" + to_string(layout); }
};

struct FileEntry {
    std::string sha256;
    int64_t bytes;
};

struct Manifest {
    int schema_version = 0;
    std::string mtst_version;
    std::vector<std::string> inputs;
    int max_seq_len = 0;
    std::string pooling;
    int embedding_dim = 0;
    std::string tokenizer;  // "" when the bundle names none (heads-only)
    int64_t pad_token_id = 0;
    std::vector<HeadInfo> heads;
    std::vector<Variant> variants;
    std::vector<std::pair<std::string, FileEntry>> files;  // in manifest order
    std::string encoder_sha256;
    std::string parity;
    std::string tokenizer_tables;  // "" when absent (bundles from before the C++ runtime)

    const FileEntry* file(const std::string& name) const;

    // Parses manifest.json text; Error(Bundle) with the Python runtime's message on any problem.
    static Manifest parse(const std::string& text, const std::string& path);
    // Reads <bundle_dir>/manifest.json.
    static Manifest read(const std::string& bundle_dir);
};

// A manifest file name must stay inside the bundle (relative, no "..", POSIX separators).
void check_relative_name(const std::string& name, const std::string& field_name);

}  // namespace mtst::detail
