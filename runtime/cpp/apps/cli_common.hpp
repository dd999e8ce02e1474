// Shared by the example apps: reading texts one per line as mtst-predict reads them.
#pragma once

#include <cstdio>
#include <functional>
#include <istream>
#include <stdexcept>
#include <string>
#include <vector>

#include "mtst/tokenizer.hpp"

namespace mtst::apps {

// A usage problem: printed with the usage line, exit status 2 (as click does).
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Reads `in` line by line (split at "\n", a UTF-8 BOM dropped from the first line, trailing "\r" and "\n"
// stripped, empty lines kept) and hands chunks of `chunk` lines to `emit`. Throws std::runtime_error
// "<name>:<line>: not valid UTF-8 (<reason> at byte <n>)" as mtst-predict does.
inline void read_lines(std::istream& in, const std::string& name, std::size_t chunk,
                       const std::function<void(std::vector<std::string>&)>& emit) {
    std::vector<std::string> lines;
    std::string raw;
    std::size_t lineno = 0;
    while (std::getline(in, raw)) {
        ++lineno;
        const bool had_newline = !in.eof();
        if (lineno == 1 && raw.compare(0, 3, "\xEF\xBB\xBF") == 0) raw.erase(0, 3);
        if (had_newline) raw.push_back('\n');  // Python decodes the line with its newline
        std::size_t byte = 0;
        if (const char* reason = mtst::utf8_problem(raw, &byte))
            throw std::runtime_error(name + ":" + std::to_string(lineno) + ": not valid UTF-8 (" + reason + " at byte " +
                                     std::to_string(byte) + ")");
        while (!raw.empty() && (raw.back() == '\n' || raw.back() == '\r')) raw.pop_back();
        lines.push_back(std::move(raw));
        raw.clear();
        if (lines.size() == chunk) {
            emit(lines);
            lines.clear();
        }
    }
    if (!lines.empty()) emit(lines);
}

}  // namespace mtst::apps
