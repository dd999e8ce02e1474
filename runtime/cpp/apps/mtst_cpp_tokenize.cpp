// mtst-cpp-tokenize BUNDLE [TEXT... | --file FILE] [--jsonl]: the C++ tokenizer's answer for each text, one
// JSON object a line: {"ids": [...], "type_ids": [...], "offsets": [[start, end], ...], "word_ids": [...],
// "truncated": false} (offsets in code points, word id null for special tokens). With --jsonl each input
// line is a JSON string, so texts may hold newlines and any other character.
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_common.hpp"
#include "mtst/tokenizer.hpp"

namespace {

const char* kUsage = "Usage: mtst-cpp-tokenize BUNDLE [TEXTS]... [--file FILE|-] [--jsonl] [--no-verify]";

std::string encode_json(const mtst::Encoding& e) {
    nlohmann::json j;
    j["ids"] = e.ids;
    j["type_ids"] = e.type_ids;
    nlohmann::json offsets = nlohmann::json::array(), words = nlohmann::json::array();
    for (const auto& [s, t] : e.offsets) offsets.push_back({s, t});
    for (int32_t w : e.word_ids) words.push_back(w < 0 ? nlohmann::json() : nlohmann::json(w));
    j["offsets"] = offsets;
    j["word_ids"] = words;
    j["truncated"] = e.truncated;
    return j.dump();
}

int run(int argc, char** argv) {
    std::vector<std::string> positional;
    std::string file;
    bool jsonl = false, verify = true;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            std::cout << kUsage << "\n";
            return 0;
        } else if (a == "-f" || a == "--file") {
            if (i + 1 >= argc) throw mtst::apps::UsageError("Option '--file' requires an argument.");
            file = argv[++i];
        } else if (a == "--jsonl") {
            jsonl = true;
        } else if (a == "--no-verify") {
            verify = false;
        } else if (a.size() > 1 && a[0] == '-') {
            throw mtst::apps::UsageError("No such option: " + a);
        } else {
            positional.push_back(a);
        }
    }
    if (positional.empty()) throw mtst::apps::UsageError("Missing argument 'BUNDLE'.");
    const mtst::Tokenizer tok = mtst::Tokenizer::from_bundle(positional[0], verify);
    std::string out;
    auto one = [&](const std::string& text) {
        out += encode_json(tok.encode(std::string_view(text)));
        out.push_back('\n');
    };
    if (file.empty()) {
        for (std::size_t i = 1; i < positional.size(); ++i) one(positional[i]);
        std::cout << out;
        return 0;
    }
    std::ifstream f;
    std::istream* in = &std::cin;
    if (file != "-") {
        f.open(file, std::ios::binary);
        if (!f) throw std::runtime_error(file + ": cannot be read");
        in = &f;
    }
    mtst::apps::read_lines(*in, file == "-" ? "<stdin>" : file, 1024, [&](std::vector<std::string>& lines) {
        for (const auto& line : lines) one(jsonl ? nlohmann::json::parse(line).get<std::string>() : line);
        std::cout << out;
        out.clear();
    });
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::ios::sync_with_stdio(false);
    try {
        return run(argc, argv);
    } catch (const mtst::apps::UsageError& e) {
        std::cerr << kUsage << "\n\nError: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "Error: " << e.what() << "\n";
        return 1;
    }
}
