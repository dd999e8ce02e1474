// Strict UTF-8 <-> code points, with the error wording of Python's UTF-8 codec.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mtst::detail {

struct Utf8Problem {
    std::size_t byte;    // offset of the sequence that is not valid UTF-8
    const char* reason;  // "invalid start byte", "invalid continuation byte", "unexpected end of data"
};

// Code points of `s`, or the first problem (overlong forms, surrogates and values past U+10FFFF are
// invalid, as in Python's decoder).
std::optional<Utf8Problem> decode_utf8(std::string_view s, std::u32string& out);

void append_utf8(std::string& out, char32_t cp);
std::string encode_utf8(const std::u32string& s);
std::string encode_utf8(const char32_t* s, std::size_t n);

}  // namespace mtst::detail
