// Length-bucketed batches (runtime/batching.py) and decoding of logits into labels and entities
// (runtime/results.py, runtime/decode.py), with the same arithmetic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "mtst/engine.hpp"
#include "manifest.hpp"
#include "mtst/tokenizer.hpp"

namespace mtst::detail {

// Length-sorted batches (stable sort: equal lengths keep input order) of at most max_batch items and,
// when max_tokens > 0, at most max_tokens padded tokens; an item longer than max_tokens gets its own batch.
std::vector<std::vector<std::size_t>> plan_batches(const std::vector<std::size_t>& lengths, std::size_t max_batch,
                                                   std::size_t max_tokens);

// numpy's float32 sum of a contiguous row (pairwise summation, 8 accumulators, blocks of 128).
float pairwise_sum(const float* a, std::size_t n);

// Softmax in float32 as results.softmax computes it: x - max, exp, / sum.
void softmax(const float* logits, std::size_t n, float* out);

// How one head's logits become an answer in one call (results.HeadDecoding): probabilities are
// softmax(logits / temperature); a sentence head abstains when its top probability is below threshold,
// a token head drops entities scored below it.
struct Decoding {
    double temperature = 1.0;
    double threshold = 0.0;
};

// Each label head's decoding for one call, by head name (results.head_decodings / call_decodings): the
// manifest's temperature, its threshold unless options.thresholds overrides it or options.abstain is off
// (threshold 0), and for token heads at least options.min_entity_score. Input error for a value outside
// [0, 1], Config error for a threshold naming no head -- the Python runtime's messages.
std::map<std::string, Decoding> head_decodings(const std::vector<HeadInfo>& heads, const PredictOptions& options);

// A sentence head's answer from its logits row, at `decoding`'s temperature and threshold.
HeadResult decode_sentence(const float* logits, const std::vector<std::string>& labels, const Decoding& decoding = {});

// (type, first word, last word + 1) spans of a tag sequence, lenient IOB2 (decode.bio_spans).
struct Span {
    std::string type;
    std::size_t first, last;
};
std::vector<Span> bio_spans(const std::vector<std::string>& tags);

// A token head's entities from its logits (T, L) over the text's own tokens (results.decode_tokens): an
// entity's score is the mean over its words of the tag's probability at `decoding`'s temperature;
// entities scored below its threshold are dropped.
HeadResult decode_tokens(const std::u32string& text, const float* logits, std::size_t n_tokens,
                         const Encoding& enc, const std::vector<std::string>& labels, const Decoding& decoding = {});

}  // namespace mtst::detail
