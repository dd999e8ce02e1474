// UTF-8 decoding (Python's codec: same acceptance, same reasons) and Python-exact formatting.
#include "check.hpp"
#include "pyformat.hpp"
#include "utf8.hpp"

using mtst::detail::decode_utf8;
using mtst::detail::py_float;
using mtst::detail::py_str_repr;

namespace {

std::string problem(const std::string& bytes) {
    std::u32string out;
    auto p = decode_utf8(bytes, out);
    return p ? std::string(p->reason) + " at " + std::to_string(p->byte) : "ok";
}

}  // namespace

TEST(utf8_valid_text_decodes_to_code_points) {
    std::u32string out;
    CHECK(!decode_utf8("a\xC3\xA9\xE4\xBD\xA0\xF0\x9F\x98\x80", out));
    CHECK(out == U"a\u00e9\u4f60\U0001F600");
    CHECK(!decode_utf8("", out) && out.empty());
    CHECK(!decode_utf8("\xF4\x8F\xBF\xBF", out) && out == U"\U0010FFFF");
}

TEST(utf8_invalid_sequences_are_named_as_python_names_them) {
    // b"...".decode("utf-8") raises UnicodeDecodeError with these reasons and start offsets
    CHECK_EQ(problem("ab\x80"), "invalid start byte at 2");
    CHECK_EQ(problem("\xC0\xAF"), "invalid start byte at 0");          // overlong 2-byte lead
    CHECK_EQ(problem("\xE0\x80\xAF"), "invalid continuation byte at 0");  // overlong 3-byte
    CHECK_EQ(problem("x\xED\xA0\x80"), "invalid continuation byte at 1");  // surrogate U+D800
    CHECK_EQ(problem("\xF4\x90\x80\x80"), "invalid continuation byte at 0");  // past U+10FFFF
    CHECK_EQ(problem("\xF5\x80\x80\x80"), "invalid start byte at 0");
    CHECK_EQ(problem("abc\xE4\xBD"), "unexpected end of data at 3");
    CHECK_EQ(problem("\xE4\xBDx"), "invalid continuation byte at 0");
    CHECK_EQ(problem("\xFF"), "invalid start byte at 0");
}

TEST(utf8_round_trip) {
    const std::u32string s = U"x\u00e9\u0301\u4e2d\U0001F468\u200D\U0001F469";
    std::u32string back;
    CHECK(!decode_utf8(mtst::detail::encode_utf8(s), back));
    CHECK(back == s);
}

TEST(floats_print_as_python_repr) {
    // repr(float(x)) in CPython
    CHECK_EQ(py_float(0.1), "0.1");
    CHECK_EQ(py_float(1.0), "1.0");
    CHECK_EQ(py_float(0.0), "0.0");
    CHECK_EQ(py_float(-0.0), "-0.0");
    CHECK_EQ(py_float(1e-05), "1e-05");
    CHECK_EQ(py_float(0.0001), "0.0001");
    CHECK_EQ(py_float(1.5e-07), "1.5e-07");
    CHECK_EQ(py_float(1e16), "1e+16");
    CHECK_EQ(py_float(1234567890123456.0), "1234567890123456.0");
    CHECK_EQ(py_float(123.456), "123.456");
    CHECK_EQ(py_float(-2.5), "-2.5");
    CHECK_EQ(py_float(static_cast<double>(0.6955679655075073f)), "0.6955679655075073");
    CHECK_EQ(py_float(static_cast<double>(1.0f / 3.0f)), "0.3333333432674408");
    CHECK_EQ(py_float(1.7976931348623157e308), "1.7976931348623157e+308");
    CHECK_EQ(py_float(5e-324), "5e-324");
}

TEST(strings_print_as_python_repr) {
    CHECK_EQ(py_str_repr("abc"), "'abc'");
    CHECK_EQ(py_str_repr("it's"), "\"it's\"");
    CHECK_EQ(py_str_repr("a'b\"c"), "'a\\'b\"c'");
    CHECK_EQ(py_str_repr("tab\there\nnl\\"), "'tab\\there\\nnl\\\\'");
    CHECK_EQ(py_str_repr("\x07\x7f"), "'\\x07\\x7f'");
    CHECK_EQ(py_str_repr("caf\xC3\xA9 \xE4\xBD\xA0"), "'caf\xC3\xA9 \xE4\xBD\xA0'");
    CHECK_EQ(mtst::detail::py_list({"b", "a"}), "['b', 'a']");
    CHECK_EQ(mtst::detail::py_list({}), "[]");
}

TEST(json_strings_as_json_dumps_ensure_ascii_false) {
    std::string out;
    mtst::detail::json_string(out, "a\"b\\c\n\t\x01 \xC3\xA9 \xE2\x80\xA8");
    CHECK_EQ(out, "\"a\\\"b\\\\c\\n\\t\\u0001 \xC3\xA9 \xE2\x80\xA8\"");
}

TEST(json_values_repr_as_python) {
    const auto j = nlohmann::ordered_json::parse(R"({"b": [1, 2.5, "x", null, true], "a": {"k": false}})");
    CHECK_EQ(mtst::detail::py_repr(j), "{'b': [1, 2.5, 'x', None, True], 'a': {'k': False}}");
    CHECK_EQ(mtst::detail::py_type_name(j), "dict");
    CHECK_EQ(mtst::detail::py_type_name(nlohmann::json::parse("[1]")), "list");
    CHECK_EQ(mtst::detail::py_type_name(nlohmann::json::parse("3.0")), "float");
}

CHECK_MAIN
