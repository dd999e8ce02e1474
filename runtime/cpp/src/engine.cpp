// The engine: a verified bundle, ONNX Runtime sessions on the chosen providers, and typed answers, as
// runtime/engine.py and runtime/providers.py do it (variant choice, batching, outputs, messages).
#include "mtst/engine.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <set>
#include <thread>

#include <onnxruntime_cxx_api.h>

#include "bundle.hpp"
#include "decode.hpp"
#include "providers.hpp"
#include "pyformat.hpp"
#include "utf8.hpp"

#ifndef MTST_VERSION
#define MTST_VERSION "0.0.0"
#endif

namespace mtst {

namespace {

using detail::Bundle;
using detail::HeadInfo;
using detail::HeadKind;
using detail::Layout;
using detail::Precision;
using detail::Variant;
using detail::Provider;
using detail::ProviderPlan;
using detail::Settings;
using detail::name_of;
using detail::ort_env;
using detail::preference;
using detail::resolve_providers;
using detail::session_options;

constexpr std::size_t kChunk = 4096;      // texts tokenized at once (engine._CHUNK)
constexpr std::size_t kHeadsRows = 4096;  // embeddings per heads.onnx run
constexpr const char* kManifest = "manifest.json";

int layout_rank(Layout l) { return l == Layout::Split ? 0 : l == Layout::Single ? 1 : 2; }

// ------------------------------------------------------------------ graphs
struct Graph {
    std::unique_ptr<Ort::Session> session;
    std::vector<std::string> inputs;
    std::set<std::string> outputs;
    std::string name;  // file name in the bundle
    explicit operator bool() const { return session != nullptr; }
};

Graph open_graph(const Bundle& b, const std::string& name, const Ort::SessionOptions& so) {
    Graph g;
    g.name = name;
    const std::string path = b.path(name);
    try {
        g.session = std::make_unique<Ort::Session>(ort_env(), path.c_str(), so);
    } catch (const Ort::Exception& e) {
        if (e.GetOrtErrorCode() == ORT_INVALID_PROTOBUF)
            throw bundle_error(b.root + ": " + name + ": not a valid ONNX model (" + e.what() + ")");
        throw bundle_error(b.root + ": " + name + ": ONNX Runtime cannot load it (" + e.what() + ")");
    }
    Ort::AllocatorWithDefaultOptions alloc;
    for (std::size_t i = 0; i < g.session->GetInputCount(); ++i)
        g.inputs.emplace_back(g.session->GetInputNameAllocated(i, alloc).get());
    for (std::size_t i = 0; i < g.session->GetOutputCount(); ++i)
        g.outputs.emplace(g.session->GetOutputNameAllocated(i, alloc).get());
    return g;
}

void require_outputs(const Graph& g, const std::vector<std::string>& names, const std::string& root) {
    std::set<std::string> missing;
    for (const auto& n : names)
        if (!g.outputs.count(n)) missing.insert(n);
    if (!missing.empty())
        throw bundle_error(root + ": " + g.name + ": outputs " + detail::py_list({missing.begin(), missing.end()}) +
                           " named in " + kManifest + " are not graph outputs (graph has " +
                           detail::py_list({g.outputs.begin(), g.outputs.end()}) + ")");
}

template <typename T>
std::vector<const char*> c_names(const std::vector<T>& names) {
    std::vector<const char*> out;
    for (const auto& n : names) out.push_back(n.c_str());
    return out;
}

Variant choose_variant(const Bundle& b, Provider provider, const std::optional<std::string>& precision,
                       const std::optional<std::string>& layout) {
    std::vector<std::string> have;
    for (const auto& v : b.manifest.variants) have.push_back(v.key());
    std::vector<Variant> cands = b.manifest.variants;
    const std::vector<std::string> layouts = {"single", "split", "heads"};
    const std::vector<std::string> precisions = {"fp32", "fp16", "int8-dynamic", "int8-static", "int8-static-cpu"};
    if (layout) {
        if (std::find(layouts.begin(), layouts.end(), *layout) == layouts.end())
            throw config_error("layout: " + detail::py_str_repr(*layout) + " is not one of " + detail::py_list(layouts));
        cands.erase(std::remove_if(cands.begin(), cands.end(), [&](const Variant& v) { return *layout != to_string(v.layout); }),
                    cands.end());
    } else if (std::any_of(cands.begin(), cands.end(), [](const Variant& v) { return v.layout != Layout::Heads; })) {
        cands.erase(std::remove_if(cands.begin(), cands.end(), [](const Variant& v) { return v.layout == Layout::Heads; }),
                    cands.end());
    }
    if (precision) {
        if (std::find(precisions.begin(), precisions.end(), *precision) == precisions.end())
            throw config_error("precision: " + detail::py_str_repr(*precision) + " is not one of " +
                               detail::py_list(precisions));
        cands.erase(std::remove_if(cands.begin(), cands.end(),
                                   [&](const Variant& v) { return *precision != to_string(v.precision); }),
                    cands.end());
    }
    if (cands.empty()) {
        std::string asked = precision.value_or("");
        if (layout) asked += (asked.empty() ? "" : "/") + *layout;
        throw bundle_error(b.root + ": no variant " + asked + " in this bundle; it has " + detail::py_list(have));
    }
    const std::vector<Precision> rank = preference(provider);
    auto key = [&](const Variant& v) {
        return std::make_pair(std::find(rank.begin(), rank.end(), v.precision) - rank.begin(), layout_rank(v.layout));
    };
    return *std::min_element(cands.begin(), cands.end(), [&](const Variant& a, const Variant& c) { return key(a) < key(c); });
}

}  // namespace

// ------------------------------------------------------------------ the engine
struct Engine::Impl {
    Bundle bundle;
    Variant variant;
    std::vector<std::string> active;
    std::optional<Tokenizer> tokenizer;
    std::vector<std::string> feeds;  // encoder graph inputs, graph order
    Graph model, encoder, heads_graph, token_graph;
    std::vector<HeadInfo> heads;  // label heads, manifest order
    std::size_t batch_size = 32, max_batch_tokens = 0, parallel = 1;
    Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);

    std::vector<const HeadInfo*> select(const std::vector<std::string>& names) const;
    std::vector<std::vector<std::size_t>> batches(const std::vector<std::size_t>& lengths) const;
    template <typename F>
    void run_batches(const std::vector<std::vector<std::size_t>>& batches, F&& work) const;
    std::vector<Ort::Value> pad(const std::vector<const Encoding*>& encs) const;
    std::vector<float> encode_embeddings(const std::vector<Encoding>& encs) const;
    std::vector<std::vector<float>> sentence_logits(const std::vector<float>& emb, std::size_t n,
                                                    const std::vector<const HeadInfo*>& sent) const;
    std::vector<Prediction> predict_chunk(const std::vector<std::string>& texts, std::size_t offset,
                                          const std::vector<const HeadInfo*>& selected, const PredictOptions& o,
                                          const std::map<std::string, detail::Decoding>& dec) const;
    std::vector<Encoding> encode_all(const std::vector<std::string>& texts, std::size_t offset,
                                     std::vector<std::u32string>* decoded) const;
};

Engine Engine::load(const std::string& path, const LoadOptions& o) {
    if (o.batch_size < 1) throw config_error("batch_size: expected an integer >= 1, got " + std::to_string(o.batch_size));
    if (o.parallel_batches < 1)
        throw config_error("parallel_batches: expected an integer >= 1, got " + std::to_string(o.parallel_batches));
    if (o.intra_op_threads < 0 || o.inter_op_threads < 0)
        throw config_error("intra_op_threads: expected an integer >= 0 (0 = ONNX Runtime's choice), got " +
                           std::to_string(std::min(o.intra_op_threads, o.inter_op_threads)));
    if (o.max_batch_tokens < -1)
        throw config_error("max_batch_tokens: expected an integer >= 1, 0 (no bound) or -1 (auto), got " +
                           std::to_string(o.max_batch_tokens));
    Settings settings{o.intra_op_threads, o.inter_op_threads, o.spinning, ORT_ENABLE_ALL};
    const std::vector<std::pair<std::string, GraphOptimizationLevel>> levels = {
        {"disable", ORT_DISABLE_ALL}, {"basic", ORT_ENABLE_BASIC}, {"extended", ORT_ENABLE_EXTENDED}, {"all", ORT_ENABLE_ALL}};
    auto lvl = std::find_if(levels.begin(), levels.end(), [&](const auto& l) { return l.first == o.graph_optimization; });
    if (lvl == levels.end())
        throw config_error("graph_optimization: " + detail::py_str_repr(o.graph_optimization) +
                           " is not one of ['disable', 'basic', 'extended', 'all']");
    settings.level = lvl->second;
    const ProviderPlan plan = resolve_providers(o.providers, o.allow_fallback);

    auto impl = std::make_shared<Impl>();
    Impl& m = *impl;
    m.bundle = detail::load_bundle(path, o.verify);
    const auto& man = m.bundle.manifest;
    const std::string& root = m.bundle.root;
    Ort::SessionOptions so;
    const std::vector<Provider> active = session_options(so, plan, settings);
    for (Provider p : active) m.active.emplace_back(name_of(p));
    m.variant = choose_variant(m.bundle, active.front(), o.precision, o.layout);
    m.batch_size = static_cast<std::size_t>(o.batch_size);
    m.parallel = static_cast<std::size_t>(o.parallel_batches);
    m.max_batch_tokens = o.max_batch_tokens == -1 ? (active.front() == Provider::CPU ? 256 : 4096)
                                                   : static_cast<std::size_t>(o.max_batch_tokens);
    for (const auto& h : man.heads)
        if (h.kind != HeadKind::Embedding) m.heads.push_back(h);
    std::vector<std::string> label_outputs;
    for (const auto& h : m.heads) label_outputs.push_back(h.output);

    if (m.variant.layout == Layout::Heads)
        throw bundle_error(root + ": variant " + m.variant.key() +
                           " is a heads-only bundle: the C++ runtime runs bundles with an encoder (single or split)");
    if (m.variant.layout == Layout::Single) {
        m.model = open_graph(m.bundle, m.variant.graphs.at("model"), so);
        std::vector<std::string> want = {"embedding"};
        want.insert(want.end(), label_outputs.begin(), label_outputs.end());
        require_outputs(m.model, want, root);
    } else {
        m.encoder = open_graph(m.bundle, m.variant.graphs.at("encoder"), so);
        require_outputs(m.encoder, {"embedding"}, root);
    }
    const Graph& runner = m.model ? m.model : m.encoder;
    std::set<std::string> extra;
    for (const auto& in : runner.inputs)
        if (std::find(man.inputs.begin(), man.inputs.end(), in) == man.inputs.end()) extra.insert(in);
    if (!extra.empty())
        throw bundle_error(root + ": " + runner.name + ": graph inputs " + detail::py_list({extra.begin(), extra.end()}) +
                           " are not in " + kManifest + " inputs " + detail::py_list(man.inputs));
    m.feeds = runner.inputs;
    if (man.tokenizer.empty())
        throw bundle_error(root + "/" + kManifest + ": tokenizer: the bundle names no tokenizer file");
    const bool inputs_ok =
        std::all_of(man.inputs.begin(), man.inputs.end(),
                    [](const std::string& n) { return n == "input_ids" || n == "attention_mask" || n == "token_type_ids"; }) &&
        std::count(man.inputs.begin(), man.inputs.end(), "input_ids") &&
        std::count(man.inputs.begin(), man.inputs.end(), "attention_mask");
    if (man.max_seq_len < 2)
        throw bundle_error(std::string(kManifest) + ": max_seq_len: expected >= 2, got " + std::to_string(man.max_seq_len));
    if (!inputs_ok)
        throw bundle_error(std::string(kManifest) + ": inputs: " + detail::py_list(man.inputs) +
                           "; expected input_ids, attention_mask (and token_type_ids)");
    if (man.tokenizer_tables.empty()) throw bundle_error(detail::no_tables_message(root));
    m.tokenizer = Tokenizer::from_files(m.bundle.path(man.tokenizer), m.bundle.path(man.tokenizer_tables), man.max_seq_len);

    if (m.variant.layout == Layout::Split) {
        Ort::SessionOptions heads_so;
        Settings hs = settings;
        hs.intra = hs.inter = 1;
        session_options(heads_so, plan, hs);
        const std::string heads_name = m.variant.graphs.at("heads");
        m.heads_graph = open_graph(m.bundle, heads_name, heads_so);
        if (std::find(m.heads_graph.inputs.begin(), m.heads_graph.inputs.end(), "embedding") == m.heads_graph.inputs.end())
            throw bundle_error(root + ": " + heads_name + ": expected input 'embedding', graph takes " +
                               detail::py_list(m.heads_graph.inputs));
        std::vector<std::string> sent_out, token_out, token_names;
        for (const auto& h : m.heads) {
            if (h.kind == HeadKind::Sentence) sent_out.push_back(h.output);
            else token_out.push_back(h.output), token_names.push_back(h.name);
        }
        require_outputs(m.heads_graph, sent_out, root);
        if (!token_out.empty()) {
            if (!m.variant.graphs.count("token_heads"))
                throw bundle_error(root + ": " + kManifest + ": token heads " + detail::py_list(token_names) +
                                   " but variant " + m.variant.key() + " has no token_heads graph");
            const std::string tname = m.variant.graphs.at("token_heads");
            m.token_graph = open_graph(m.bundle, tname, heads_so);
            if (std::find(m.token_graph.inputs.begin(), m.token_graph.inputs.end(), "token_states") ==
                m.token_graph.inputs.end())
                throw bundle_error(root + ": " + tname + ": expected input 'token_states', graph takes " +
                                   detail::py_list(m.token_graph.inputs));
            require_outputs(m.token_graph, token_out, root);
            require_outputs(m.encoder, {"token_states"}, root);
        }
    }
    return Engine(std::move(impl));
}

std::vector<const HeadInfo*> Engine::Impl::select(const std::vector<std::string>& names) const {
    std::vector<const HeadInfo*> out;
    if (names.empty()) {
        for (const auto& h : heads) out.push_back(&h);
        return out;
    }
    std::vector<std::string> unknown, have;
    for (const auto& h : heads) have.push_back(h.name);
    for (const auto& n : names)
        if (std::find(have.begin(), have.end(), n) == have.end()) unknown.push_back(n);
    if (!unknown.empty()) {
        const bool emb = std::find(unknown.begin(), unknown.end(), "embedding") != unknown.end();
        throw config_error("heads: unknown head(s) " + detail::py_list(unknown) + "; this engine has " +
                           detail::py_list(have) +
                           (emb ? " (the embedding is not a head: use embed() or return_embedding=True)" : ""));
    }
    std::set<std::string> seen;
    for (const auto& n : names)
        if (seen.insert(n).second)
            for (const auto& h : heads)
                if (h.name == n) out.push_back(&h);
    return out;
}

std::vector<std::vector<std::size_t>> Engine::Impl::batches(const std::vector<std::size_t>& lengths) const {
    const std::size_t n = lengths.size();
    if (n == 1) return {{0}};
    // with parallel workers, a request that fits one batch is cut in one batch per worker
    const std::size_t per_worker = (n + parallel - 1) / parallel;
    return detail::plan_batches(lengths, std::min(batch_size, per_worker), max_batch_tokens);
}

template <typename F>
void Engine::Impl::run_batches(const std::vector<std::vector<std::size_t>>& list, F&& work) const {
    if (parallel == 1 || list.size() == 1) {
        for (const auto& idx : list) work(idx);
        return;
    }
    // batches come sorted by length: handing out the longest first balances the workers
    std::atomic<std::size_t> next{0};
    std::exception_ptr error;
    std::mutex error_lock;
    auto worker = [&] {
        for (std::size_t k; (k = next.fetch_add(1)) < list.size();) {
            try {
                work(list[list.size() - 1 - k]);
            } catch (...) {
                std::lock_guard<std::mutex> lock(error_lock);
                if (!error) error = std::current_exception();
            }
        }
    };
    std::vector<std::thread> threads;
    for (std::size_t t = 1; t < std::min(parallel, list.size()); ++t) threads.emplace_back(worker);
    worker();
    for (auto& t : threads) t.join();
    if (error) std::rethrow_exception(error);
}

// int64 [batch, longest] inputs in the graph's input order, padded with pad_token_id (tokenize.pad)
std::vector<Ort::Value> Engine::Impl::pad(const std::vector<const Encoding*>& encs) const {
    std::size_t longest = 0;
    for (const Encoding* e : encs) longest = std::max(longest, e->size());
    const std::size_t n = encs.size();
    std::vector<Ort::Value> values;
    for (const std::string& name : feeds) {
        Ort::AllocatorWithDefaultOptions alloc;
        const int64_t shape[2] = {static_cast<int64_t>(n), static_cast<int64_t>(longest)};
        Ort::Value v = Ort::Value::CreateTensor<int64_t>(alloc, shape, 2);
        int64_t* data = v.GetTensorMutableData<int64_t>();
        const int64_t fill = name == "input_ids" ? bundle.manifest.pad_token_id : 0;
        std::fill(data, data + n * longest, fill);
        for (std::size_t i = 0; i < n; ++i) {
            const Encoding& e = *encs[i];
            int64_t* row = data + i * longest;
            for (std::size_t t = 0; t < e.size(); ++t)
                row[t] = name == "input_ids" ? e.ids[t] : name == "attention_mask" ? 1 : e.type_ids[t];
        }
        values.push_back(std::move(v));
    }
    return values;
}

std::vector<Encoding> Engine::Impl::encode_all(const std::vector<std::string>& texts, std::size_t offset,
                                               std::vector<std::u32string>* decoded) const {
    std::vector<Encoding> encs;
    encs.reserve(texts.size());
    std::u32string text;
    for (std::size_t i = 0; i < texts.size(); ++i) {
        if (auto bad = detail::decode_utf8(texts[i], text))
            throw input_error("texts[" + std::to_string(offset + i) + "]: not valid UTF-8 (" + bad->reason + " at byte " +
                              std::to_string(bad->byte) + ")");
        encs.push_back(tokenizer->encode(text));
        if (decoded) decoded->push_back(text);
    }
    return encs;
}

std::vector<float> Engine::Impl::encode_embeddings(const std::vector<Encoding>& encs) const {
    const std::size_t n = encs.size();
    const auto dim = static_cast<std::size_t>(bundle.manifest.embedding_dim);
    std::vector<float> out(n * dim);
    std::vector<std::size_t> lengths;
    for (const auto& e : encs) lengths.push_back(e.size());
    const Graph& runner = model ? model : encoder;
    const std::vector<const char*> in_names = c_names(feeds);
    const char* out_name = "embedding";
    run_batches(batches(lengths), [&](const std::vector<std::size_t>& idx) {
        std::vector<const Encoding*> batch;
        for (std::size_t i : idx) batch.push_back(&encs[i]);
        std::vector<Ort::Value> inputs = pad(batch);
        auto outs = runner.session->Run(Ort::RunOptions{nullptr}, in_names.data(), inputs.data(), inputs.size(), &out_name, 1);
        const float* emb = outs[0].GetTensorData<float>();
        for (std::size_t j = 0; j < idx.size(); ++j) std::copy(emb + j * dim, emb + (j + 1) * dim, out.begin() + idx[j] * dim);
    });
    return out;
}

// heads.onnx on (n, dim) embeddings, at most kHeadsRows rows a run; one (n * labels) block per head
std::vector<std::vector<float>> Engine::Impl::sentence_logits(const std::vector<float>& emb, std::size_t n,
                                                              const std::vector<const HeadInfo*>& sent) const {
    const auto dim = static_cast<int64_t>(bundle.manifest.embedding_dim);
    std::vector<std::vector<float>> out(sent.size());
    std::vector<std::string> names;
    for (const HeadInfo* h : sent) names.push_back(h->output);
    const std::vector<const char*> out_names = c_names(names);
    const char* in_name = "embedding";
    for (std::size_t s = 0; s < n; s += kHeadsRows) {
        const std::size_t rows = std::min(kHeadsRows, n - s);
        const int64_t shape[2] = {static_cast<int64_t>(rows), dim};
        Ort::Value in = Ort::Value::CreateTensor<float>(memory, const_cast<float*>(emb.data()) + s * static_cast<std::size_t>(dim),
                                                        rows * static_cast<std::size_t>(dim), shape, 2);
        auto outs = heads_graph.session->Run(Ort::RunOptions{nullptr}, &in_name, &in, 1, out_names.data(), out_names.size());
        for (std::size_t k = 0; k < sent.size(); ++k) {
            const float* p = outs[k].GetTensorData<float>();
            out[k].insert(out[k].end(), p, p + rows * sent[k]->labels.size());
        }
    }
    return out;
}

std::vector<Prediction> Engine::Impl::predict_chunk(const std::vector<std::string>& texts, std::size_t offset,
                                                    const std::vector<const HeadInfo*>& selected,
                                                    const PredictOptions& o,
                                                    const std::map<std::string, detail::Decoding>& dec) const {
    const std::size_t n = texts.size();
    const auto dim = static_cast<std::size_t>(bundle.manifest.embedding_dim);
    std::vector<const HeadInfo*> sent, token;
    for (const HeadInfo* h : selected) (h->kind == HeadKind::Sentence ? sent : token).push_back(h);
    std::vector<Prediction> preds(n);
    std::vector<std::u32string> decoded;
    std::vector<Encoding> encs = encode_all(texts, offset, &decoded);
    std::vector<float> emb;
    std::vector<std::vector<float>> sent_logits(sent.size());
    if (encoder && token.empty()) {
        // split layout, sentence heads only: embeddings, then heads.onnx once
        emb = encode_embeddings(encs);
        if (!sent.empty()) sent_logits = sentence_logits(emb, n, sent);
    } else {
        emb.assign(n * dim, 0.0f);
        for (std::size_t k = 0; k < sent.size(); ++k) sent_logits[k].assign(n * sent[k]->labels.size(), 0.0f);
        std::vector<std::string> names = {"embedding"};
        if (model) {
            for (const HeadInfo* h : sent) names.push_back(h->output);
            for (const HeadInfo* h : token) names.push_back(h->output);
        } else {
            names.push_back("token_states");
        }
        std::vector<std::string> token_outputs;
        for (const HeadInfo* h : token) token_outputs.push_back(h->output);
        const std::vector<const char*> in_names = c_names(feeds), out_names = c_names(names),
                                       tok_names = c_names(token_outputs);
        const Graph& runner = model ? model : encoder;
        std::vector<std::size_t> lengths;
        for (const auto& e : encs) lengths.push_back(e.size());
        run_batches(batches(lengths), [&](const std::vector<std::size_t>& idx) {
            std::vector<const Encoding*> batch;
            for (std::size_t i : idx) batch.push_back(&encs[i]);
            std::vector<Ort::Value> inputs = pad(batch);
            auto outs = runner.session->Run(Ort::RunOptions{nullptr}, in_names.data(), inputs.data(), inputs.size(),
                                            out_names.data(), out_names.size());
            const float* e = outs[0].GetTensorData<float>();
            for (std::size_t j = 0; j < idx.size(); ++j) std::copy(e + j * dim, e + (j + 1) * dim, emb.begin() + idx[j] * dim);
            std::vector<Ort::Value> tok_outs;
            std::size_t first_token = 1 + sent.size();
            if (model) {
                for (std::size_t k = 0; k < sent.size(); ++k) {
                    const std::size_t L = sent[k]->labels.size();
                    const float* p = outs[1 + k].GetTensorData<float>();
                    for (std::size_t j = 0; j < idx.size(); ++j)
                        std::copy(p + j * L, p + (j + 1) * L, sent_logits[k].begin() + idx[j] * L);
                }
            } else if (!token.empty()) {
                const char* states = "token_states";
                tok_outs = token_graph.session->Run(Ort::RunOptions{nullptr}, &states, &outs[1], 1, tok_names.data(),
                                                    tok_names.size());
                first_token = 0;
            }
            for (std::size_t k = 0; k < token.size(); ++k) {
                const Ort::Value& v = model ? outs[first_token + k] : tok_outs[k];
                const auto shape = v.GetTensorTypeAndShapeInfo().GetShape();  // (B, T, L)
                const auto T = static_cast<std::size_t>(shape[1]), L = static_cast<std::size_t>(shape[2]);
                const float* p = v.GetTensorData<float>();
                for (std::size_t j = 0; j < idx.size(); ++j) {
                    const std::size_t i = idx[j];
                    const float* row = p + j * T * L;
                    preds[i].heads[token[k]->name] =
                        detail::decode_tokens(decoded[i], row, encs[i].size(), encs[i], token[k]->labels,
                                              dec.at(token[k]->name));
                    if (o.return_logits) {
                        preds[i].logits[token[k]->name].assign(row, row + encs[i].size() * L);
                        preds[i].logits_shape[token[k]->name] = {static_cast<int64_t>(encs[i].size()),
                                                                 static_cast<int64_t>(L)};
                    }
                }
            }
        });
        if (encoder && !sent.empty()) sent_logits = sentence_logits(emb, n, sent);
    }
    for (std::size_t k = 0; k < sent.size(); ++k) {
        const std::size_t L = sent[k]->labels.size();
        for (std::size_t i = 0; i < n; ++i) {
            const float* row = sent_logits[k].data() + i * L;
            preds[i].heads[sent[k]->name] = detail::decode_sentence(row, sent[k]->labels, dec.at(sent[k]->name));
            if (o.return_logits) {
                preds[i].logits[sent[k]->name].assign(row, row + L);
                preds[i].logits_shape[sent[k]->name] = {static_cast<int64_t>(L)};
            }
        }
    }
    for (std::size_t i = 0; i < n; ++i) {
        Prediction& p = preds[i];
        p.text = texts[i];
        p.truncated = encs[i].truncated;
        for (const HeadInfo* h : selected) p.head_order.push_back(h->name);
        if (o.return_embedding) p.embedding.assign(emb.begin() + i * dim, emb.begin() + (i + 1) * dim);
    }
    return preds;
}

namespace {

// ONNX Runtime failures while running a graph, as mtst errors naming the bundle
template <typename F>
auto ort_guard(const std::string& root, F&& fn) -> decltype(fn()) {
    try {
        return fn();
    } catch (const Ort::Exception& e) {
        throw Error(ErrorKind::Runtime, root + ": ONNX Runtime failed: " + e.what());
    }
}

}  // namespace

std::vector<Prediction> Engine::predict(const std::vector<std::string>& texts, const PredictOptions& o) const {
    return ort_guard(impl_->bundle.root, [&] { return predict_unguarded(texts, o); });
}

std::vector<std::vector<float>> Engine::embed(const std::vector<std::string>& texts) const {
    return ort_guard(impl_->bundle.root, [&] { return embed_unguarded(texts); });
}

std::vector<Prediction> Engine::predict_unguarded(const std::vector<std::string>& texts, const PredictOptions& o) const {
    const Impl& m = *impl_;
    const std::map<std::string, detail::Decoding> dec = detail::head_decodings(m.heads, o);  // checks o first
    const std::vector<const HeadInfo*> selected = m.select(o.heads);
    std::vector<Prediction> out;
    out.reserve(texts.size());
    for (std::size_t s = 0; s < texts.size(); s += kChunk) {
        const std::vector<std::string> chunk(texts.begin() + static_cast<std::ptrdiff_t>(s),
                                             texts.begin() + static_cast<std::ptrdiff_t>(std::min(texts.size(), s + kChunk)));
        for (auto& p : m.predict_chunk(chunk, s, selected, o, dec)) out.push_back(std::move(p));
    }
    return out;
}

std::vector<std::vector<float>> Engine::embed_unguarded(const std::vector<std::string>& texts) const {
    const Impl& m = *impl_;
    const auto dim = static_cast<std::size_t>(m.bundle.manifest.embedding_dim);
    std::vector<std::vector<float>> out;
    out.reserve(texts.size());
    for (std::size_t s = 0; s < texts.size(); s += kChunk) {
        const std::vector<std::string> chunk(texts.begin() + static_cast<std::ptrdiff_t>(s),
                                             texts.begin() + static_cast<std::ptrdiff_t>(std::min(texts.size(), s + kChunk)));
        const std::vector<float> emb = m.encode_embeddings(m.encode_all(chunk, s, nullptr));
        for (std::size_t i = 0; i < chunk.size(); ++i) out.emplace_back(emb.begin() + i * dim, emb.begin() + (i + 1) * dim);
    }
    return out;
}

Encoding Engine::tokenize(const std::string& text) const { return impl_->tokenizer->encode(std::string_view(text)); }
std::string Engine::bundle_root() const { return impl_->bundle.root; }
std::string Engine::variant() const { return impl_->variant.key(); }
std::vector<std::string> Engine::active_providers() const { return impl_->active; }
int Engine::embedding_dim() const { return impl_->bundle.manifest.embedding_dim; }
int Engine::max_seq_len() const { return impl_->bundle.manifest.max_seq_len; }
std::vector<std::string> Engine::heads() const {
    std::vector<std::string> out;
    for (const auto& h : impl_->heads) out.push_back(h.name);
    return out;
}

const char* version() { return MTST_VERSION; }
std::string onnxruntime_version() { return Ort::GetVersionString(); }

}  // namespace mtst
