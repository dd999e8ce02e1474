#include "decode.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "pyformat.hpp"
#include "utf8.hpp"

namespace mtst::detail {

std::vector<std::vector<std::size_t>> plan_batches(const std::vector<std::size_t>& lengths, std::size_t max_batch,
                                                   std::size_t max_tokens) {
    std::vector<std::size_t> order(lengths.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return lengths[a] < lengths[b]; });
    std::vector<std::vector<std::size_t>> batches;
    const std::size_t n = order.size();
    for (std::size_t start = 0; start < n;) {
        std::size_t end = start + 1;
        // sorted ascending: the longest of order[start:end] is order[end - 1]
        while (end < n && end - start < max_batch &&
               (max_tokens == 0 || (end - start + 1) * lengths[order[end]] <= max_tokens))
            ++end;
        batches.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(start),
                             order.begin() + static_cast<std::ptrdiff_t>(end));
        start = end;
    }
    return batches;
}

float pairwise_sum(const float* a, std::size_t n) {
    if (n < 8) {
        // numpy sums short rows one by one, starting from -0.0
        float res = -0.0f;
        for (std::size_t i = 0; i < n; ++i) res += a[i];
        return res;
    }
    if (n <= 128) {
        float r[8];
        for (int k = 0; k < 8; ++k) r[k] = a[k];
        std::size_t i = 8;
        for (; i < n - (n % 8); i += 8)
            for (int k = 0; k < 8; ++k) r[k] += a[i + static_cast<std::size_t>(k)];
        float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; ++i) res += a[i];
        return res;
    }
    std::size_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

void softmax(const float* logits, std::size_t n, float* out) {
    float top = logits[0];
    for (std::size_t i = 1; i < n; ++i) top = std::max(top, logits[i]);
    for (std::size_t i = 0; i < n; ++i) out[i] = std::exp(logits[i] - top);
    const float total = pairwise_sum(out, n);
    for (std::size_t i = 0; i < n; ++i) out[i] /= total;
}

namespace {

double unit_number(const std::string& where, double v) {
    if (!(v >= 0.0 && v <= 1.0)) throw input_error(where + ": expected a number in [0, 1], got " + py_float(v));
    return v;
}

}  // namespace

std::map<std::string, Decoding> head_decodings(const std::vector<HeadInfo>& heads, const PredictOptions& o) {
    const double floor = unit_number("min_entity_score", o.min_entity_score);
    for (const auto& [name, v] : o.thresholds) unit_number("thresholds[" + py_str_repr(name) + "]", v);
    std::vector<std::string> names, unknown;
    for (const HeadInfo& h : heads) names.push_back(h.name);
    for (const auto& [name, v] : o.thresholds)  // std::map: sorted, as Python sorts them
        if (std::find(names.begin(), names.end(), name) == names.end()) unknown.push_back(name);
    if (!unknown.empty())
        throw config_error("thresholds: unknown head(s) " + py_list(unknown) + "; the heads are " + py_list(names));
    std::map<std::string, Decoding> out;
    for (const HeadInfo& h : heads) {
        double threshold = 0.0;
        if (o.abstain) {
            auto it = o.thresholds.find(h.name);
            threshold = it == o.thresholds.end() ? h.threshold : it->second;
        }
        if (h.kind == HeadKind::Token) threshold = std::max(threshold, floor);
        out[h.name] = Decoding{h.temperature, threshold};
    }
    return out;
}

HeadResult decode_sentence(const float* logits, const std::vector<std::string>& labels, const Decoding& decoding) {
    const std::size_t n = labels.size();
    std::vector<float> probs(n);
    if (decoding.temperature == 1.0) {
        softmax(logits, n, probs.data());
    } else {  // float32 logits / float32(T), as numpy divides them
        const auto t = static_cast<float>(decoding.temperature);
        std::vector<float> scaled(logits, logits + n);
        for (float& x : scaled) x /= t;
        softmax(scaled.data(), n, probs.data());
    }
    const std::size_t best = static_cast<std::size_t>(std::max_element(probs.begin(), probs.end()) - probs.begin());
    HeadResult r;
    r.kind = HeadResult::Kind::Sentence;
    r.label = labels[best];
    r.score = probs[best];
    r.abstained = r.score < decoding.threshold;
    r.scores.reserve(n);
    for (std::size_t i = 0; i < n; ++i) r.scores.emplace_back(labels[i], probs[i]);
    return r;
}

std::vector<Span> bio_spans(const std::vector<std::string>& tags) {
    std::vector<Span> spans;
    bool open = false;
    std::string cur_type;
    std::size_t cur_start = 0;
    for (std::size_t i = 0; i < tags.size(); ++i) {
        const std::string& tag = tags[i];
        const bool b = tag.rfind("B-", 0) == 0, in = tag.rfind("I-", 0) == 0;
        if (b || (in && (!open || cur_type != tag.substr(2)))) {
            if (open) spans.push_back({cur_type, cur_start, i});
            open = true;
            cur_type = tag.substr(2);
            cur_start = i;
        } else if (!in) {  // "O" or anything unknown closes the current entity
            if (open) spans.push_back({cur_type, cur_start, i});
            open = false;
        }
    }
    if (open) spans.push_back({cur_type, cur_start, tags.size()});
    return spans;
}

namespace {

// 1 / sum(exp((x - max) / T)) in double (results._top_probability); math.fsum's exactness mirrored by
// a sum in long double of the few terms
double top_probability(const float* row, std::size_t n, double temperature) {
    double top = row[0];
    for (std::size_t i = 1; i < n; ++i) top = std::max(top, static_cast<double>(row[i]));
    long double sum = 0.0L;
    for (std::size_t i = 0; i < n; ++i) {
        const double z = static_cast<double>(row[i]) - top;
        sum += std::exp(temperature == 1.0 ? z : z / temperature);
    }
    return 1.0 / static_cast<double>(sum);
}

std::size_t argmax(const float* row, std::size_t n) {
    return static_cast<std::size_t>(std::max_element(row, row + n) - row);
}

}  // namespace

HeadResult decode_tokens(const std::u32string& text, const float* logits, std::size_t n_tokens, const Encoding& enc,
                         const std::vector<std::string>& labels, const Decoding& decoding) {
    const std::size_t L = labels.size();
    HeadResult r;
    r.kind = HeadResult::Kind::Token;
    // first sub-token of each word, in word order (decode.word_starts)
    std::map<int32_t, std::size_t> first;
    for (std::size_t i = 0; i < n_tokens; ++i)
        if (enc.word_ids[i] >= 0) first.emplace(enc.word_ids[i], i);
    std::vector<std::size_t> firsts;
    for (const auto& [w, i] : first) firsts.push_back(i);
    std::vector<std::size_t> tag_ids;
    bool any_entity = false;
    for (std::size_t i : firsts) {
        tag_ids.push_back(argmax(logits + i * L, L));
        const std::string& lab = labels[tag_ids.back()];
        any_entity = any_entity || lab.rfind("B-", 0) == 0 || lab.rfind("I-", 0) == 0;
    }
    if (!any_entity) return r;
    std::vector<std::string> tags;
    for (std::size_t t : tag_ids) tags.push_back(labels[t]);
    const std::vector<Span> spans = bio_spans(tags);
    std::vector<double> scores(tags.size(), 0.0);
    for (const Span& s : spans)
        for (std::size_t k = s.first; k < s.last; ++k) scores[k] = top_probability(logits + firsts[k] * L, L, decoding.temperature);
    // character span of every word: its first sub-token's start to its last sub-token's end
    std::map<int32_t, std::pair<int64_t, int64_t>> chars;
    for (std::size_t i = 0; i < n_tokens; ++i) {
        const int32_t w = enc.word_ids[i];
        if (w < 0) continue;
        auto it = chars.find(w);
        if (it == chars.end()) chars.emplace(w, enc.offsets[i]);
        else it->second.second = std::max(it->second.second, enc.offsets[i].second);
    }
    std::vector<int32_t> words;
    for (const auto& [w, c] : chars) words.push_back(w);
    const auto n = static_cast<int64_t>(text.size());
    for (const Span& s : spans) {
        Entity e;
        e.label = s.type;
        e.start = chars[words[s.first]].first;
        e.end = chars[words[s.last - 1]].second;
        // text[start:end] as Python slices it
        int64_t a = std::clamp<int64_t>(e.start < 0 ? e.start + n : e.start, 0, n);
        int64_t b = std::clamp<int64_t>(e.end < 0 ? e.end + n : e.end, 0, n);
        if (b > a) e.text = encode_utf8(text.data() + a, static_cast<std::size_t>(b - a));
        double total = 0.0;
        for (std::size_t k = s.first; k < s.last; ++k) total += scores[k];
        e.score = total / static_cast<double>(s.last - s.first);
        if (e.score >= decoding.threshold) r.entities.push_back(std::move(e));
    }
    return r;
}

}  // namespace mtst::detail
