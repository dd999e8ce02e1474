// The mtst runtime for C++: a verified bundle, ONNX Runtime sessions, typed answers -- the same bundle
// and the same answers as the Python runtime (mtst.runtime.Engine).
//
//   #include <mtst/engine.hpp>
//   mtst::LoadOptions options;
//   options.providers = {"cpu"};
//   options.intra_op_threads = 1;
//   auto engine = mtst::Engine::load("bundle/", options);
//   auto results = engine.predict({"Apple opened an office in Paris."});   // all heads
//   results[0].heads.at("ner").entities;    // text, label, start, end (code points), score
//   results[0].heads.at("intent").label;    // + score, scores, abstained (score under the threshold)
//   engine.embed({"..."});                  // L2-normalized float vectors
//
// One Engine serves many threads: predict() and embed() are const and keep no state between calls.
// Copies of an Engine share its sessions.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mtst/error.hpp"
#include "mtst/tokenizer.hpp"

namespace mtst {

struct LoadOptions {
    // "auto" or a chain such as {"cuda", "cpu"}; every provider named is required unless allow_fallback
    std::vector<std::string> providers = {"auto"};
    bool allow_fallback = false;
    std::optional<std::string> precision;  // fp32 | fp16 | int8-dynamic | int8-static | int8-static-cpu (default: by provider)
    std::optional<std::string> layout;     // single | split (default: split when the bundle has both)
    int intra_op_threads = 0;              // 0: ONNX Runtime's choice
    int inter_op_threads = 0;
    bool spinning = false;                    // idle ORT worker threads busy-wait (off, as in Python)
    std::string graph_optimization = "all";  // disable | basic | extended | all
    int batch_size = 32;
    int max_batch_tokens = -1;  // padded tokens per batch; -1: by provider (256 on CPU), 0: no bound
    int parallel_batches = 1;   // batches of one request run at once, each on its own thread
    bool verify = true;         // check every file's size and sha256 against manifest.json
};

// Scores are calibrated with each head's temperature from the bundle's manifest (softmax(logits / T)).
// A sentence head scored under its threshold answers with abstained = true; a token head drops entities
// scored under it. The thresholds are the manifest's unless overridden here (as Engine.predict's
// thresholds= and abstain= in Python, mtst-predict's --threshold and --no-abstain).
struct PredictOptions {
    std::vector<std::string> heads;  // heads to run, empty: all
    bool return_embedding = false;
    bool return_logits = false;
    double min_entity_score = 0.0;  // drop entities scored below this (mean tag probability of their words)
    std::map<std::string, double> thresholds;  // head name -> threshold in [0, 1], overriding the manifest's
    bool abstain = true;  // false: no thresholds (every sentence head answers, every entity is kept)
};

struct Entity {
    std::string text;  // the text's characters start..end
    std::string label;  // entity type, e.g. "PER"
    int64_t start = 0;  // code-point offsets into the input text (as Python's str indexes it), end exclusive
    int64_t end = 0;
    double score = 0.0;  // mean (calibrated) probability of the predicted tag over the entity's words
};

// The answer of one head: label/score/scores for sentence heads, entities for token heads.
struct HeadResult {
    enum class Kind { Sentence, Token };
    Kind kind = Kind::Sentence;
    std::string label;                                 // the most probable label (also when abstained)
    double score = 0.0;                                // its (calibrated) probability
    bool abstained = false;                            // score under the head's threshold: probably not its text
    std::vector<std::pair<std::string, double>> scores;  // probability of every label, in label order
    std::vector<Entity> entities;                      // in text order
};

struct MTST_API Prediction {
    std::string text;
    bool truncated = false;  // the text was longer than max_seq_len tokens: the tail was not seen
    std::vector<std::string> head_order;         // the heads that ran, in the bundle's order
    std::map<std::string, HeadResult> heads;
    std::vector<float> embedding;                // (dim,) when return_embedding
    std::map<std::string, std::vector<float>> logits;  // (L,) or (T*L,) row-major when return_logits
    std::map<std::string, std::vector<int64_t>> logits_shape;

    // One JSON object as `mtst-predict --format json` prints it (same keys, order, spacing, numbers).
    std::string to_json(bool embedding = true, bool logits = true) const;
};

class MTST_API Engine {
public:
    static Engine load(const std::string& bundle, const LoadOptions& options = {});

    std::vector<Prediction> predict(const std::vector<std::string>& texts, const PredictOptions& options = {}) const;
    std::vector<std::vector<float>> embed(const std::vector<std::string>& texts) const;
    Encoding tokenize(const std::string& text) const;

    std::string bundle_root() const;
    std::string variant() const;                      // e.g. "int8-dynamic/split"
    std::vector<std::string> active_providers() const;  // providers really in use, best first
    std::vector<std::string> heads() const;           // label heads, bundle order
    int embedding_dim() const;
    int max_seq_len() const;

    struct Impl;

private:
    std::vector<Prediction> predict_unguarded(const std::vector<std::string>& texts, const PredictOptions& options) const;
    std::vector<std::vector<float>> embed_unguarded(const std::vector<std::string>& texts) const;
    explicit Engine(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
    std::shared_ptr<const Impl> impl_;
};

// The library's version (mtst's) and the ONNX Runtime version it runs on.
MTST_API const char* version();
MTST_API std::string onnxruntime_version();

}  // namespace mtst
