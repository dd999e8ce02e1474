// Prediction::to_json: one object as `mtst-predict --format json` prints it, byte for byte
// (json.dumps(Prediction.to_dict(), ensure_ascii=False): ", " and ": " separators, Python float repr).
#include "mtst/engine.hpp"
#include "pyformat.hpp"

namespace mtst {

namespace {

void floats(std::string& out, const float* v, std::size_t n) {
    out.push_back('[');
    for (std::size_t i = 0; i < n; ++i) {
        if (i) out += ", ";
        out += detail::py_float(static_cast<double>(v[i]));
    }
    out.push_back(']');
}

void head_json(std::string& out, const HeadResult& r) {
    if (r.kind == HeadResult::Kind::Sentence) {
        out += "{\"label\": ";
        detail::json_string(out, r.label);
        out += ", \"score\": " + detail::py_float(r.score) + (r.abstained ? ", \"abstained\": true" : ", \"abstained\": false") +
               ", \"scores\": {";
        for (std::size_t i = 0; i < r.scores.size(); ++i) {
            if (i) out += ", ";
            detail::json_string(out, r.scores[i].first);
            out += ": " + detail::py_float(r.scores[i].second);
        }
        out += "}}";
        return;
    }
    out += "{\"entities\": [";
    for (std::size_t i = 0; i < r.entities.size(); ++i) {
        const Entity& e = r.entities[i];
        if (i) out += ", ";
        out += "{\"text\": ";
        detail::json_string(out, e.text);
        out += ", \"label\": ";
        detail::json_string(out, e.label);
        out += ", \"start\": " + std::to_string(e.start) + ", \"end\": " + std::to_string(e.end) +
               ", \"score\": " + detail::py_float(e.score) + "}";
    }
    out += "]}";
}

}  // namespace

std::string Prediction::to_json(bool with_embedding, bool with_logits) const {
    std::string out = "{\"text\": ";
    detail::json_string(out, text);
    out += truncated ? ", \"truncated\": true, \"heads\": {" : ", \"truncated\": false, \"heads\": {";
    bool first = true;
    for (const std::string& name : head_order) {
        if (!first) out += ", ";
        first = false;
        detail::json_string(out, name);
        out += ": ";
        head_json(out, heads.at(name));
    }
    out += "}";
    if (with_embedding && !embedding.empty()) {
        out += ", \"embedding\": ";
        floats(out, embedding.data(), embedding.size());
    }
    if (with_logits && !logits.empty()) {
        out += ", \"logits\": {";
        first = true;
        for (const std::string& name : head_order) {
            auto it = logits.find(name);
            if (it == logits.end()) continue;
            if (!first) out += ", ";
            first = false;
            detail::json_string(out, name);
            out += ": ";
            const std::vector<int64_t>& shape = logits_shape.at(name);
            if (shape.size() == 1) {
                floats(out, it->second.data(), it->second.size());
            } else {
                const auto rows = static_cast<std::size_t>(shape[0]), cols = static_cast<std::size_t>(shape[1]);
                out.push_back('[');
                for (std::size_t r = 0; r < rows; ++r) {
                    if (r) out += ", ";
                    floats(out, it->second.data() + r * cols, cols);
                }
                out.push_back(']');
            }
        }
        out += "}";
    }
    out += "}";
    return out;
}

}  // namespace mtst
