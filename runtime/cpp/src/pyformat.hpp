// Text exactly as Python writes it: repr() of floats, strings and JSON values (for error messages that
// match the Python runtime word for word) and json.dumps(..., ensure_ascii=False) output.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace mtst::detail {

// repr(float(x)): the shortest text that reads back as x ("0.1", "1e-05", "3.0", "1e+16", "nan").
std::string py_float(double x);

// repr(s) of a Python str given as UTF-8 (quotes and escapes as Python chooses them).
std::string py_str_repr(std::string_view utf8);

// repr() of the Python value json.loads would give for `v` (None, True, 1, 'a', [1, 'b'], {'k': 2});
// for nlohmann::json and nlohmann::ordered_json (which keeps the file's key order, as Python does).
template <class Json>
std::string py_repr(const Json& v);

// repr(sorted(names)) / repr(list(names)) of strings: "['a', 'b']".
std::string py_list(const std::vector<std::string>& items);

// type(value).__name__ of the Python value json.loads would give: dict, list, str, int, float, bool, NoneType.
template <class Json>
std::string py_type_name(const Json& v) {
    if (v.is_null()) return "NoneType";
    if (v.is_boolean()) return "bool";
    if (v.is_number_integer()) return "int";
    if (v.is_number_float()) return "float";
    if (v.is_string()) return "str";
    if (v.is_array()) return "list";
    if (v.is_object()) return "dict";
    return "object";
}

// json.dumps(s, ensure_ascii=False) of a string given as UTF-8 (quotes included).
void json_string(std::string& out, std::string_view utf8);

template <class Json>
std::string py_repr(const Json& v) {
    if (v.is_null()) return "None";
    if (v.is_boolean()) return v.template get<bool>() ? "True" : "False";
    if (v.is_number_unsigned()) return std::to_string(v.template get<unsigned long long>());
    if (v.is_number_integer()) return std::to_string(v.template get<long long>());
    if (v.is_number_float()) return py_float(v.template get<double>());
    if (v.is_string()) return py_str_repr(v.template get_ref<const std::string&>());
    std::string out = v.is_array() ? "[" : "{";
    bool first = true;
    if (v.is_array()) {
        for (const auto& x : v) {
            out += first ? "" : ", ";
            first = false;
            out += py_repr(x);
        }
        return out + "]";
    }
    for (const auto& item : v.items()) {
        out += first ? "" : ", ";
        first = false;
        out += py_str_repr(item.key()) + ": " + py_repr(item.value());
    }
    return out + "}";
}

}  // namespace mtst::detail
