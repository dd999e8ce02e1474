// The C API (mtst.h) over mtst::Engine: JSON options in, JSON answers out, status codes and error strings.
#include "mtst/mtst.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <set>

#include <nlohmann/json.hpp>
#include <onnxruntime_cxx_api.h>

#include "mtst/engine.hpp"
#include "pyformat.hpp"

struct mtst_engine {
    mtst::Engine engine;
};

namespace {

using json = nlohmann::json;

char* copy_string(const std::string& s) {
    char* p = static_cast<char*>(std::malloc(s.size() + 1));
    if (!p) throw std::bad_alloc();
    std::memcpy(p, s.c_str(), s.size() + 1);
    return p;
}

void set_error(char** error, const std::string& message) {
    if (!error) return;
    *error = static_cast<char*>(std::malloc(message.size() + 1));
    if (*error) std::memcpy(*error, message.c_str(), message.size() + 1);
}

mtst_status status_of(mtst::ErrorKind k) {
    switch (k) {
        case mtst::ErrorKind::Bundle: return MTST_ERROR_BUNDLE;
        case mtst::ErrorKind::Config: return MTST_ERROR_CONFIG;
        case mtst::ErrorKind::ProviderUnavailable: return MTST_ERROR_PROVIDER;
        case mtst::ErrorKind::Input: return MTST_ERROR_INPUT;
        case mtst::ErrorKind::Runtime: return MTST_ERROR_RUNTIME;
    }
    return MTST_ERROR_INTERNAL;
}

// Runs fn, turning every exception into a status and an error string.
template <typename F>
mtst_status guarded(char** error, F&& fn) {
    try {
        fn();
        return MTST_OK;
    } catch (const mtst::Error& e) {
        set_error(error, std::string(e.kind_name()) + ": " + e.what());
        return status_of(e.kind());
    } catch (const Ort::Exception& e) {
        set_error(error, std::string("RuntimeError: ONNX Runtime: ") + e.what());
        return MTST_ERROR_RUNTIME;
    } catch (const std::exception& e) {
        set_error(error, std::string("InternalError: ") + e.what());
        return MTST_ERROR_INTERNAL;
    } catch (...) {
        set_error(error, "InternalError: unknown exception");
        return MTST_ERROR_INTERNAL;
    }
}

json parse_options(const char* options_json, const char* what, const std::set<std::string>& known) {
    if (!options_json || !*options_json) return json::object();
    json o;
    try {
        o = json::parse(options_json);
    } catch (const json::parse_error& e) {
        throw mtst::config_error(std::string(what) + ": invalid JSON (" + e.what() + ")");
    }
    if (!o.is_object()) throw mtst::config_error(std::string(what) + ": expected a JSON object, got " + mtst::detail::py_repr(o));
    for (const auto& [k, v] : o.items())
        if (!known.count(k))
            throw mtst::config_error(std::string(what) + ": unknown option " + mtst::detail::py_str_repr(k) + "; known: " +
                                     mtst::detail::py_list({known.begin(), known.end()}));
    return o;
}

template <typename T>
T option(const json& o, const char* what, const char* key, T dflt) {
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) return dflt;
    try {
        return it->get<T>();
    } catch (const json::exception&) {
        throw mtst::config_error(std::string(what) + ": " + key + ": unexpected value " + mtst::detail::py_repr(*it));
    }
}

std::vector<std::string> texts_of(const char* const* texts, const size_t* lengths, size_t n) {
    if (n && !texts) throw mtst::input_error("texts: NULL with n > 0");
    std::vector<std::string> out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        if (!texts[i]) throw mtst::input_error("texts[" + std::to_string(i) + "]: NULL");
        out.emplace_back(texts[i], lengths ? lengths[i] : std::strlen(texts[i]));
    }
    return out;
}

}  // namespace

extern "C" {

mtst_engine* mtst_engine_load(const char* bundle_dir, const char* options_json, char** error) {
    mtst_engine* out = nullptr;
    guarded(error, [&] {
        if (!bundle_dir) throw mtst::input_error("bundle_dir: NULL");
        const char* what = "options";
        const json o = parse_options(options_json, what,
                                     {"providers", "allow_fallback", "precision", "layout", "intra_op_threads",
                                      "inter_op_threads", "spinning", "graph_optimization", "batch_size",
                                      "max_batch_tokens", "parallel_batches", "verify"});
        mtst::LoadOptions lo;
        lo.providers = option(o, what, "providers", lo.providers);
        lo.allow_fallback = option(o, what, "allow_fallback", lo.allow_fallback);
        if (o.contains("precision") && !o["precision"].is_null()) lo.precision = option<std::string>(o, what, "precision", "");
        if (o.contains("layout") && !o["layout"].is_null()) lo.layout = option<std::string>(o, what, "layout", "");
        lo.intra_op_threads = option(o, what, "intra_op_threads", lo.intra_op_threads);
        lo.inter_op_threads = option(o, what, "inter_op_threads", lo.inter_op_threads);
        lo.spinning = option(o, what, "spinning", lo.spinning);
        lo.graph_optimization = option(o, what, "graph_optimization", lo.graph_optimization);
        lo.batch_size = option(o, what, "batch_size", lo.batch_size);
        lo.max_batch_tokens = option(o, what, "max_batch_tokens", lo.max_batch_tokens);
        lo.parallel_batches = option(o, what, "parallel_batches", lo.parallel_batches);
        lo.verify = option(o, what, "verify", lo.verify);
        out = new mtst_engine{mtst::Engine::load(bundle_dir, lo)};
    });
    return out;
}

void mtst_engine_free(mtst_engine* engine) { delete engine; }

mtst_status mtst_predict_json(const mtst_engine* engine, const char* const* texts, const size_t* lengths, size_t n,
                              const char* options_json, char** out_json, char** error) {
    return guarded(error, [&] {
        if (!engine) throw mtst::input_error("engine: NULL");
        if (!out_json) throw mtst::input_error("out_json: NULL");
        const char* what = "predict options";
        const json o = parse_options(options_json, what, {"heads", "embedding", "logits", "min_entity_score", "thresholds", "abstain"});
        mtst::PredictOptions po;
        po.heads = option(o, what, "heads", po.heads);
        po.return_embedding = option(o, what, "embedding", false);
        po.return_logits = option(o, what, "logits", false);
        po.min_entity_score = option(o, what, "min_entity_score", 0.0);
        po.thresholds = option(o, what, "thresholds", po.thresholds);
        po.abstain = option(o, what, "abstain", po.abstain);
        const auto preds = engine->engine.predict(texts_of(texts, lengths, n), po);
        std::string out = "[";
        for (size_t i = 0; i < preds.size(); ++i) {
            if (i) out += ", ";
            out += preds[i].to_json(po.return_embedding, po.return_logits);
        }
        out += "]";
        *out_json = copy_string(out);
    });
}

mtst_status mtst_embed(const mtst_engine* engine, const char* const* texts, const size_t* lengths, size_t n, float* out,
                       size_t out_len, char** error) {
    return guarded(error, [&] {
        if (!engine) throw mtst::input_error("engine: NULL");
        const size_t dim = static_cast<size_t>(engine->engine.embedding_dim());
        if (n && (!out || out_len < n * dim))
            throw mtst::input_error("out: room for " + std::to_string(n * dim) + " floats needed (n * embedding_dim), got " +
                                    std::to_string(out ? out_len : 0));
        const auto emb = engine->engine.embed(texts_of(texts, lengths, n));
        for (size_t i = 0; i < emb.size(); ++i) std::copy(emb[i].begin(), emb[i].end(), out + i * dim);
    });
}

mtst_status mtst_engine_info_json(const mtst_engine* engine, char** out_json, char** error) {
    return guarded(error, [&] {
        if (!engine || !out_json) throw mtst::input_error("engine and out_json must not be NULL");
        const mtst::Engine& e = engine->engine;
        const json info = {{"bundle", e.bundle_root()},         {"variant", e.variant()},
                           {"providers", e.active_providers()}, {"heads", e.heads()},
                           {"embedding_dim", e.embedding_dim()}, {"max_seq_len", e.max_seq_len()},
                           {"version", mtst::version()},        {"onnxruntime", mtst::onnxruntime_version()}};
        *out_json = copy_string(info.dump());
    });
}

size_t mtst_embedding_dim(const mtst_engine* engine) {
    return engine ? static_cast<size_t>(engine->engine.embedding_dim()) : 0;
}

const char* mtst_version(void) { return mtst::version(); }

void mtst_free(void* p) { std::free(p); }

}  // extern "C"
