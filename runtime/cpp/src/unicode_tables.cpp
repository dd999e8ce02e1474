#include "unicode_tables.hpp"

#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "mtst/error.hpp"
#include "pyformat.hpp"

namespace mtst::detail {

namespace {

constexpr char32_t kMaxCp = 0x10FFFF;
constexpr const char* kFormat = "mtst-tokenizer-tables";
constexpr int kVersion = 1;

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& path, const std::string& what) { throw bundle_error(path + ": " + what); }

const json& field(const json& doc, const std::string& path, const char* key) {
    auto it = doc.find(key);
    if (it == doc.end() || !it->is_array()) fail(path, std::string(key) + ": missing or not a list");
    return *it;
}

char32_t code_point(const json& v, const std::string& path, const char* key) {
    if (!v.is_number_unsigned() || v.get<unsigned long long>() > kMaxCp)
        fail(path, std::string(key) + ": expected a code point, got " + py_repr(v));
    return static_cast<char32_t>(v.get<unsigned long long>());
}

void set_ranges(std::vector<uint16_t>& flags, const json& doc, const std::string& path, const char* key,
                uint16_t flag) {
    for (const auto& r : field(doc, path, key)) {
        if (!r.is_array() || r.size() != 2) fail(path, std::string(key) + ": expected [first, last], got " + py_repr(r));
        const char32_t lo = code_point(r[0], path, key), hi = code_point(r[1], path, key);
        if (lo > hi) fail(path, std::string(key) + ": range " + py_repr(r) + " runs backwards");
        for (char32_t c = lo; c <= hi; ++c) flags[c] |= flag;
    }
}

void set_map(std::unordered_map<char32_t, std::u32string>& out, std::vector<uint16_t>& flags, const json& doc,
             const std::string& path, const char* key, uint16_t flag) {
    for (const auto& e : field(doc, path, key)) {
        if (!e.is_array() || e.size() != 2 || !e[1].is_array())
            fail(path, std::string(key) + ": expected [code point, [code points]], got " + py_repr(e));
        const char32_t c = code_point(e[0], path, key);
        std::u32string to;
        for (const auto& x : e[1]) to.push_back(code_point(x, path, key));
        out[c] = std::move(to);
        flags[c] |= flag;
    }
}

}  // namespace

UnicodeTables UnicodeTables::load(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail(path, "cannot be read");
    std::stringstream ss;
    ss << f.rdbuf();
    json doc;
    try {
        doc = json::parse(ss.str());
    } catch (const json::parse_error& e) {
        fail(path, std::string("invalid JSON (") + e.what() + ")");
    }
    if (!doc.is_object()) fail(path, "expected a JSON object, got " + py_type_name(doc));
    if (doc.value("format", json()) != kFormat)
        fail(path, "format: expected '" + std::string(kFormat) + "', got " + py_repr(doc.value("format", json())));
    if (doc.value("version", json()) != kVersion)
        fail(path, "version " + py_repr(doc.value("version", json())) + " is not supported; this runtime reads " +
                       std::to_string(kVersion));

    std::vector<uint16_t> flags(kMaxCp + 1, 0);
    set_ranges(flags, doc, path, "clean_removed", kCleanRemoved);
    set_ranges(flags, doc, path, "clean_whitespace", kCleanWhitespace);
    set_ranges(flags, doc, path, "chinese", kChinese);
    set_ranges(flags, doc, path, "nonspacing_mark", kMark);
    set_ranges(flags, doc, path, "split_whitespace", kSplitWhitespace);
    set_ranges(flags, doc, path, "punctuation", kPunctuation);
    set_ranges(flags, doc, path, "py_space", kPySpace);
    UnicodeTables t;
    set_map(t.nfd_, flags, doc, path, "nfd", kDecomposes);
    set_map(t.lower_, flags, doc, path, "lowercase", kLowercase);
    for (const auto& e : field(doc, path, "ccc")) {
        if (!e.is_array() || e.size() != 2 || !e[1].is_number_unsigned() || e[1].get<unsigned>() == 0 ||
            e[1].get<unsigned>() > 255)
            fail(path, "ccc: expected [code point, class 1..255], got " + py_repr(e));
        const char32_t c = code_point(e[0], path, "ccc");
        t.ccc_[c] = static_cast<uint8_t>(e[1].get<unsigned>());
        flags[c] |= kCombining;
    }

    // fold into blocks of 256 code points, each distinct block stored once
    std::map<std::vector<uint16_t>, uint16_t> seen;
    t.index_.resize((kMaxCp + 1) >> 8);
    for (std::size_t b = 0; b < t.index_.size(); ++b) {
        std::vector<uint16_t> block(flags.begin() + static_cast<std::ptrdiff_t>(b * 256),
                                    flags.begin() + static_cast<std::ptrdiff_t>(b * 256 + 256));
        auto [it, added] = seen.emplace(std::move(block), static_cast<uint16_t>(seen.size()));
        if (added) t.blocks_.insert(t.blocks_.end(), it->first.begin(), it->first.end());
        t.index_[b] = it->second;
    }
    return t;
}

}  // namespace mtst::detail
