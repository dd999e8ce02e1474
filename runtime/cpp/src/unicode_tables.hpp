// The per-code-point tables of a bundle (tokenizer.tables.json, written by mtst.export.tokenizer_tables).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace mtst::detail {

class UnicodeTables {
public:
    enum Flag : uint16_t {
        kCleanRemoved = 1 << 0,     // BertNormalizer(clean_text) drops it
        kCleanWhitespace = 1 << 1,  // ... turns it into a space
        kChinese = 1 << 2,          // handle_chinese_chars pads it with spaces
        kMark = 1 << 3,             // strip_accents removes it after NFD
        kSplitWhitespace = 1 << 4,  // BertPreTokenizer splits on it (and drops it)
        kPunctuation = 1 << 5,      // BertPreTokenizer isolates it
        kPySpace = 1 << 6,          // Python's str.isspace()
        kDecomposes = 1 << 7,       // NFD changes it (see nfd())
        kLowercase = 1 << 8,        // Lowercase changes it (see lower())
        kCombining = 1 << 9,        // non-zero canonical combining class (see ccc())
    };

    // Reads and checks the tables file; Error(Bundle) names the file and the field.
    static UnicodeTables load(const std::string& path);

    uint16_t flags(char32_t c) const {
        if (c > 0x10FFFF) return 0;
        return blocks_[static_cast<std::size_t>(index_[c >> 8]) * 256 + (c & 0xFF)];
    }
    bool has(char32_t c, Flag f) const { return (flags(c) & f) != 0; }
    const std::u32string& nfd(char32_t c) const { return nfd_.at(c); }
    const std::u32string& lower(char32_t c) const { return lower_.at(c); }
    uint8_t ccc(char32_t c) const {
        auto it = ccc_.find(c);
        return it == ccc_.end() ? 0 : it->second;
    }

private:
    // two-stage table: index_[c >> 8] picks a 256-entry block of flags (equal blocks stored once)
    std::vector<uint16_t> index_;
    std::vector<uint16_t> blocks_;
    std::unordered_map<char32_t, std::u32string> nfd_;
    std::unordered_map<char32_t, std::u32string> lower_;
    std::unordered_map<char32_t, uint8_t> ccc_;
};

}  // namespace mtst::detail
