// The engine on the toy bundles of tests/cpp/fixtures.py ($MTST_FIXTURES): the Python runtime's answers
// (expected-*.jsonl) for awkward texts, thread safety, bad input, provider and variant errors.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "check.hpp"
#include "mtst/engine.hpp"

using json = nlohmann::json;

namespace {

std::string fixtures() {
    const char* f = std::getenv("MTST_FIXTURES");
    if (!f) throw std::runtime_error("MTST_FIXTURES is not set (ctest sets it; run tests/cpp/fixtures.py OUT first)");
    return f;
}

std::vector<json> read_jsonl(const std::string& path) {
    std::ifstream f(path);
    std::vector<json> out;
    for (std::string line; std::getline(f, line);) out.push_back(json::parse(line));
    return out;
}

std::vector<std::string> texts() {
    std::vector<std::string> out;
    for (const auto& j : read_jsonl(fixtures() + "/texts.jsonl")) out.push_back(j.get<std::string>());
    return out;
}

mtst::LoadOptions cpu() {
    mtst::LoadOptions o;
    o.providers = {"cpu"};
    return o;
}

double max_diff(const json& a, const json& b) {
    if (a.is_number()) return std::fabs(a.get<double>() - b.get<double>());
    double m = 0;
    for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, max_diff(a[i], b[i]));
    return m;
}

// labels and entity spans identical, numbers within 1e-5
void check_same(const json& want, const json& got, const std::string& where) {
    CHECK_EQ(got["text"], want["text"]);
    CHECK_EQ(got["truncated"], want["truncated"]);
    for (const auto& [name, w] : want["heads"].items()) {
        const json& g = got["heads"][name];
        if (w.contains("label")) {
            CHECK_EQ(g["label"], w["label"]);
            for (const auto& [label, p] : w["scores"].items()) CHECK(std::fabs(g["scores"][label].get<double>() - p.get<double>()) < 1e-5);
        } else {
            CHECK_EQ(g["entities"].size(), w["entities"].size());
            for (std::size_t i = 0; i < std::min(g["entities"].size(), w["entities"].size()); ++i)
                for (const char* k : {"text", "label", "start", "end"}) CHECK_EQ(g["entities"][i][k], w["entities"][i][k]);
        }
    }
    const double e = max_diff(want["embedding"], got["embedding"]);
    if (!(e <= 1e-5)) check::fail(__FILE__, __LINE__, where + ": embedding differs by " + std::to_string(e));
    for (const auto& [name, w] : want["logits"].items()) CHECK(max_diff(w, got["logits"][name]) <= 1e-5);
}

void check_bundle(const std::string& name, const std::string& variant) {
    const auto engine = mtst::Engine::load(fixtures() + "/" + name, cpu());
    CHECK_EQ(engine.variant(), variant);
    CHECK_EQ(engine.active_providers().at(0), "cpu");
    const auto want = read_jsonl(fixtures() + "/expected-" + name + ".jsonl");
    const auto t = texts();
    mtst::PredictOptions po;
    po.return_embedding = po.return_logits = true;
    const auto preds = engine.predict(t, po);
    CHECK_EQ(preds.size(), want.size());
    for (std::size_t i = 0; i < preds.size(); ++i) {
        check_same(want[i], json::parse(preds[i].to_json()), name + " text " + std::to_string(i));
        const mtst::Encoding enc = engine.tokenize(t[i]);
        const json& we = want[i]["encoding"];
        CHECK(enc.ids == we["ids"].get<std::vector<int64_t>>());
        CHECK_EQ(enc.truncated, we["truncated"].get<bool>());
        for (std::size_t k = 0; k < enc.size(); ++k) {
            CHECK_EQ(enc.offsets[k].first, we["offsets"][k][0].get<int64_t>());
            CHECK_EQ(enc.offsets[k].second, we["offsets"][k][1].get<int64_t>());
            CHECK_EQ(enc.word_ids[k], we["word_ids"][k].is_null() ? -1 : we["word_ids"][k].get<int32_t>());
        }
    }
}

}  // namespace

TEST(single_graph_bundle_answers_as_python) { check_bundle("toy-single", "fp32/single"); }
TEST(split_bundle_answers_as_python) { check_bundle("toy-split", "fp32/split"); }

TEST(one_engine_serves_many_threads) {
    const auto engine = mtst::Engine::load(fixtures() + "/toy-split", cpu());
    const auto t = texts();
    std::string want;
    for (const auto& p : engine.predict(t)) want += p.to_json();
    std::atomic<int> same{0};
    std::vector<std::thread> threads;
    for (int k = 0; k < 4; ++k)
        threads.emplace_back([&] {
            for (int r = 0; r < 3; ++r) {
                std::string got;
                for (const auto& p : engine.predict(t)) got += p.to_json();
                same += got == want;
            }
        });
    for (auto& th : threads) th.join();
    CHECK_EQ(same.load(), 12);
}

TEST(parallel_batches_and_one_text_give_the_same_labels) {
    auto o = cpu();
    o.parallel_batches = 3;
    o.batch_size = 2;
    const auto many = mtst::Engine::load(fixtures() + "/toy-single", o).predict(texts());
    const auto engine = mtst::Engine::load(fixtures() + "/toy-single", cpu());
    const auto t = texts();
    for (std::size_t i = 0; i < t.size(); ++i) {
        const auto one = engine.predict({t[i]});
        CHECK_EQ(one[0].heads.at("intent").label, many[i].heads.at("intent").label);
        CHECK_EQ(one[0].heads.at("ner").entities.size(), many[i].heads.at("ner").entities.size());
    }
}

TEST(bad_input_is_refused_by_index) {
    const auto engine = mtst::Engine::load(fixtures() + "/toy-single", cpu());
    CHECK_ERROR(engine.predict({"fine", "bad \xC3 byte"}), "texts[1]: not valid UTF-8 (invalid continuation byte at byte 4)");
    CHECK_ERROR(engine.embed({"\xED\xA0\x80"}), "texts[0]: not valid UTF-8 (invalid continuation byte at byte 0)");
    CHECK(engine.predict({}).empty());
    CHECK(engine.embed({}).empty());
    const auto empty = engine.predict({""});
    CHECK_EQ(empty.size(), 1u);
    CHECK(!empty[0].truncated && empty[0].heads.at("ner").entities.empty());
}

TEST(a_one_megabyte_text_is_truncated_quickly) {
    const auto engine = mtst::Engine::load(fixtures() + "/toy-single", cpu());
    std::string big;
    while (big.size() < (1u << 20)) big += "Grüße aus Zürich, 東京 und New York! ";
    const auto t0 = std::chrono::steady_clock::now();
    const auto preds = engine.predict({big, "short"});
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(preds[0].truncated && !preds[1].truncated);
    CHECK_EQ(engine.tokenize(big).size(), 32u);
    CHECK(seconds < 5.0);  // the pre-cut keeps it to a prefix (whole: 1 M code points through every step)
    std::string one_word(1u << 20, 'x');  // no whitespace to cut at: tokenized whole, one [UNK]
    CHECK_EQ(engine.tokenize(one_word).size(), 3u);
}

TEST(heads_are_selected_by_name) {
    const auto engine = mtst::Engine::load(fixtures() + "/toy-split", cpu());
    CHECK(engine.heads() == std::vector<std::string>({"intent", "ner"}));
    mtst::PredictOptions po;
    po.heads = {"ner", "intent", "ner"};
    const auto p = engine.predict({"Paris"}, po);
    CHECK(p[0].head_order == std::vector<std::string>({"ner", "intent"}));
    po.heads = {"embedding", "nope"};
    CHECK_ERROR(engine.predict({"x"}, po),
                "heads: unknown head(s) ['embedding', 'nope']; this engine has ['intent', 'ner'] (the embedding is not "
                "a head: use embed() or return_embedding=True)");
    po.heads = {"intent"};
    const auto sent = engine.predict({"x"}, po);  // split, sentence heads only: encoder + heads.onnx
    CHECK(sent[0].head_order == std::vector<std::string>({"intent"}));
    CHECK_EQ(engine.embed({"x", "y"}).size(), 2u);
    CHECK_EQ(engine.embed({"x"}).at(0).size(), 8u);
}

TEST(min_entity_score_drops_low_entities) {
    const auto engine = mtst::Engine::load(fixtures() + "/toy-single", cpu());
    const std::vector<std::string> t = {"Angela Merkel met Emmanuel Macron in Berlin on Tuesday."};
    mtst::PredictOptions po;
    const auto all = engine.predict(t, po)[0].heads.at("ner").entities;
    CHECK(!all.empty());
    po.min_entity_score = 1.0;
    CHECK(engine.predict(t, po)[0].heads.at("ner").entities.empty());
    po.min_entity_score = 1.5;
    CHECK_ERROR(engine.predict(t, po), "min_entity_score: expected a number in [0, 1], got 1.5");
}

TEST(bundle_providers_and_variants_are_checked) {
    const std::string old = fixtures() + "/old-bundle";
    char* real = ::realpath(old.c_str(), nullptr);
    const std::string root = real;
    std::free(real);
    CHECK_ERROR(mtst::Engine::load(old, cpu()),
                root + "/manifest.json: tokenizer_tables: the bundle has no tokenizer tables, which the C++ runtime needs "
                       "(export it again with this mtst: mtst-export writes tokenizer.tables.json for WordPiece tokenizers)");
    auto o = cpu();
    o.precision = "int8-dynamic";
    const std::string single = fixtures() + "/toy-single";
    char* r2 = ::realpath(single.c_str(), nullptr);
    const std::string sroot = r2;
    std::free(r2);
    CHECK_ERROR(mtst::Engine::load(single, o), sroot + ": no variant int8-dynamic in this bundle; it has ['fp32/single']");
    o = cpu();
    o.precision = "int4";
    CHECK_ERROR(mtst::Engine::load(single, o),
                "precision: 'int4' is not one of ['fp32', 'fp16', 'int8-dynamic', 'int8-static', 'int8-static-cpu']");
    o = cpu();
    o.providers = {"gpu"};
    CHECK_ERROR(mtst::Engine::load(single, o),
                "providers[0]: 'gpu' is not one of ['tensorrt', 'cuda', 'cpu'] (or 'auto', or an ONNX Runtime name such "
                "as 'CUDAExecutionProvider')");
    o.providers = {"tensorrt", "cpu"};
    try {
        mtst::Engine::load(single, o);  // the CPU build of ONNX Runtime has no TensorRT
        CHECK(false);
    } catch (const mtst::Error& e) {
        CHECK(e.kind() == mtst::ErrorKind::ProviderUnavailable);
        CHECK(std::string(e.what()).rfind("provider tensorrt (TensorrtExecutionProvider) is not available", 0) == 0);
    }
    o.allow_fallback = true;
    CHECK(mtst::Engine::load(single, o).active_providers() == std::vector<std::string>({"cpu"}));
    o = cpu();
    o.batch_size = 0;
    CHECK_ERROR(mtst::Engine::load(single, o), "batch_size: expected an integer >= 1, got 0");
}

CHECK_MAIN
