// Length-bucketed batches, softmax and the decoding of sentence labels and BIO entities (code-point
// offsets), as runtime/batching.py, runtime/results.py and runtime/decode.py compute them.
#include <cmath>

#include "check.hpp"
#include "decode.hpp"

using namespace mtst::detail;

namespace {

std::string str(const std::vector<std::vector<std::size_t>>& batches) {
    std::string s;
    for (const auto& b : batches) {
        s += "[";
        for (std::size_t i = 0; i < b.size(); ++i) s += (i ? "," : "") + std::to_string(b[i]);
        s += "]";
    }
    return s;
}

std::string str(const std::vector<Span>& spans) {
    std::string s;
    for (const auto& x : spans) s += "(" + x.type + "," + std::to_string(x.first) + "," + std::to_string(x.last) + ")";
    return s;
}

}  // namespace

TEST(batches_are_length_sorted_stable_and_bounded) {
    CHECK_EQ(str(plan_batches({5, 1, 3, 1}, 2, 0)), "[1,3][2,0]");
    CHECK_EQ(str(plan_batches({1, 2, 3, 10}, 32, 8)), "[0,1][2][3]");  // 3 x 3 = 9 > 8 tokens
    CHECK_EQ(str(plan_batches({40}, 32, 8)), "[0]");                   // longer than the bound: a batch of its own
    CHECK_EQ(str(plan_batches({}, 32, 0)), "");
    CHECK_EQ(str(plan_batches({4, 4, 4, 4, 4}, 32, 256)), "[0,1,2,3,4]");
    CHECK_EQ(str(plan_batches({4, 4, 4, 4, 4}, 2, 0)), "[0,1][2,3][4]");
}

TEST(softmax_sums_to_one_in_float32) {
    const float logits[3] = {2.0f, -1.0f, 0.5f};
    float p[3];
    softmax(logits, 3, p);
    CHECK(std::fabs(p[0] + p[1] + p[2] - 1.0f) < 1e-6f);
    CHECK(p[0] > p[2] && p[2] > p[1]);
    // numpy's pairwise float32 sum: 8 accumulators from 8 values on
    std::vector<float> ones(200, 0.1f);
    CHECK_EQ(pairwise_sum(ones.data(), ones.size()), 20.000004f);
}

TEST(sentence_label_is_the_arg_max_with_every_score) {
    const float logits[3] = {0.1f, 3.0f, 0.2f};
    const auto r = decode_sentence(logits, {"neg", "pos", "neutral"});
    CHECK_EQ(r.label, "pos");
    CHECK_EQ(r.scores.size(), 3u);
    CHECK_EQ(r.scores[1].first, "pos");
    CHECK_EQ(r.score, r.scores[1].second);
    const float tie[2] = {1.0f, 1.0f};
    CHECK_EQ(decode_sentence(tie, {"a", "b"}).label, "a");  // first of equal scores, as numpy's argmax
}

TEST(bio_spans_read_lenient_iob2) {
    CHECK_EQ(str(bio_spans({"B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-PER"})),
             "(PER,0,2)(LOC,3,5)(LOC,5,6)(PER,6,7)");
    CHECK_EQ(str(bio_spans({"O", "O"})), "");
    CHECK_EQ(str(bio_spans({"B-X", "weird", "I-X"})), "(X,0,1)(X,2,3)");
}

TEST(entities_span_words_in_code_points) {
    // "Île de Paris!" -> [CLS] île de par ##is ! [SEP]; words 0 1 2 3
    const std::u32string text = U"\u00cele de Paris!";
    mtst::Encoding enc;
    enc.word_ids = {-1, 0, 1, 2, 2, 3, -1};
    enc.offsets = {{0, 0}, {0, 3}, {4, 6}, {7, 10}, {10, 12}, {12, 13}, {0, 0}};
    const std::vector<std::string> labels = {"O", "B-LOC", "I-LOC"};
    // per token logits (T=7, L=3): île=B-LOC, de=I-LOC, par=I-LOC (##is ignored: not a word start), !=O
    std::vector<float> logits = {5, 0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 5, 9, 0, 0, 5, 0, 0, 5, 0, 0};
    const auto r = decode_tokens(text, logits.data(), 7, enc, labels);
    CHECK_EQ(r.entities.size(), 1u);
    CHECK_EQ(r.entities[0].text, "\xC3\x8Ele de Paris");
    CHECK_EQ(r.entities[0].label, "LOC");
    CHECK_EQ(r.entities[0].start, 0);
    CHECK_EQ(r.entities[0].end, 12);
    const double p = 1.0 / (1.0 + 2.0 * std::exp(-5.0));  // each word's tag probability
    CHECK(std::fabs(r.entities[0].score - p) < 1e-12);
}

TEST(text_without_entity_tags_has_no_entities) {
    const std::u32string text = U"hi";
    mtst::Encoding enc;
    enc.word_ids = {-1, 0, -1};
    enc.offsets = {{0, 0}, {0, 2}, {0, 0}};
    const std::vector<float> logits = {0, 9, 9, 9, 0, 0, 0, 9, 0};  // the special tokens do not count
    CHECK(decode_tokens(text, logits.data(), 3, enc, {"O", "B-PER", "I-PER"}).entities.empty());
}

TEST(temperature_flattens_scores_and_threshold_abstains) {
    const float logits[3] = {0.1f, 3.0f, 0.2f};
    const auto plain = decode_sentence(logits, {"neg", "pos", "neutral"});
    const auto warm = decode_sentence(logits, {"neg", "pos", "neutral"}, Decoding{2.0, 0.0});
    CHECK_EQ(warm.label, "pos");  // the arg-max never changes
    const float half[3] = {0.05f, 1.5f, 0.1f};
    CHECK_EQ(warm.score, decode_sentence(half, {"neg", "pos", "neutral"}).score);  // float32 logits / 2
    CHECK(warm.score < plain.score);
    CHECK(!warm.abstained && !plain.abstained);
    CHECK(decode_sentence(logits, {"a", "b", "c"}, Decoding{2.0, warm.score + 1e-9}).abstained);
    CHECK(!decode_sentence(logits, {"a", "b", "c"}, Decoding{2.0, warm.score}).abstained);  // at the threshold: answers
}

TEST(token_temperature_scores_and_threshold_drops_entities) {
    const std::u32string text = U"Ann met Bob";
    mtst::Encoding enc;
    enc.word_ids = {-1, 0, 1, 2, -1};
    enc.offsets = {{0, 0}, {0, 3}, {4, 7}, {8, 11}, {0, 0}};
    const std::vector<std::string> labels = {"O", "B-PER", "I-PER"};
    // Ann: B-PER by a margin of 4, met: O, Bob: B-PER by a margin of 1
    const std::vector<float> logits = {9, 0, 0, 0, 4, 0, 5, 0, 0, 0, 1, 0, 9, 0, 0};
    const auto at = [&](double t, double threshold) {
        return decode_tokens(text, logits.data(), 5, enc, labels, Decoding{t, threshold}).entities;
    };
    const double ann = 1.0 / (1.0 + 2.0 * std::exp(-4.0 / 3.0)), bob = 1.0 / (1.0 + 2.0 * std::exp(-1.0 / 3.0));
    CHECK_EQ(at(3.0, 0.0).size(), 2u);
    CHECK(std::fabs(at(3.0, 0.0)[0].score - ann) < 1e-12);
    CHECK(std::fabs(at(3.0, 0.0)[1].score - bob) < 1e-12);
    CHECK_EQ(at(3.0, 0.5).size(), 1u);  // Bob (0.41) dropped, Ann (0.66) kept
    CHECK_EQ(at(3.0, 0.5)[0].text, "Ann");
    CHECK_EQ(at(1.0, 0.5).size(), 2u);  // uncalibrated Bob: 0.58
    CHECK(at(3.0, 0.7).empty());
}

TEST(head_decodings_override_disable_and_floor_thresholds) {
    HeadInfo intent{"intent", HeadKind::Sentence, "intent_logits", {"a", "b"}, 1.5, 0.4};
    HeadInfo ner{"ner", HeadKind::Token, "ner_logits", {"O", "B-X"}, 0.8, 0.3};
    const std::vector<HeadInfo> heads = {intent, ner};
    mtst::PredictOptions o;
    auto d = head_decodings(heads, o);
    CHECK_EQ(d["intent"].temperature, 1.5);
    CHECK_EQ(d["intent"].threshold, 0.4);
    CHECK_EQ(d["ner"].threshold, 0.3);
    o.thresholds = {{"intent", 0.9}};
    o.min_entity_score = 0.5;
    d = head_decodings(heads, o);
    CHECK_EQ(d["intent"].threshold, 0.9);
    CHECK_EQ(d["ner"].threshold, 0.5);  // the larger of the head's threshold and min_entity_score
    o.abstain = false;
    d = head_decodings(heads, o);
    CHECK_EQ(d["intent"].threshold, 0.0);
    CHECK_EQ(d["intent"].temperature, 1.5);  // abstain=false keeps the calibration
    CHECK_EQ(d["ner"].threshold, 0.5);       // min_entity_score still applies
    o.thresholds = {{"intent", 1.5}};
    CHECK_ERROR(head_decodings(heads, o), "thresholds['intent']: expected a number in [0, 1], got 1.5");
    o.thresholds = {{"zz", 0.5}, {"embedding", 0.1}};
    CHECK_ERROR(head_decodings(heads, o), "thresholds: unknown head(s) ['embedding', 'zz']; the heads are ['intent', 'ner']");
}

CHECK_MAIN
