#include "manifest.hpp"

#include <cstdlib>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "mtst/error.hpp"
#include "pyformat.hpp"
#include "utf8.hpp"

namespace mtst::detail {

namespace {

using ojson = nlohmann::ordered_json;

constexpr int kSchemaLo = 1, kSchemaHi = 1;  // inclusive range this runtime reads
constexpr const char* kManifest = "manifest.json";

[[noreturn]] void fail(const std::string& what) { throw bundle_error(std::string(kManifest) + ": " + what); }

std::string repr(const ojson& v) { return py_repr(v); }

enum class Type { Int, Str, List, Dict };

bool is(const ojson& v, Type t) {
    switch (t) {
        case Type::Int: return v.is_number_integer();  // JSON true/false are not ints here (Python: bool excluded)
        case Type::Str: return v.is_string();
        case Type::List: return v.is_array();
        case Type::Dict: return v.is_object();
    }
    return false;
}

const char* name_of(Type t) {
    switch (t) {
        case Type::Int: return "int";
        case Type::Str: return "str";
        case Type::List: return "list";
        case Type::Dict: return "dict";
    }
    return "?";
}

// runtime/manifest.py _get
const ojson& get(const ojson& d, const std::string& key, const std::string& where, Type t) {
    auto it = d.find(key);
    if (it == d.end()) fail(where + key + ": missing");
    if (!is(*it, t)) fail(where + key + ": expected " + name_of(t) + ", got " + repr(*it));
    return *it;
}

template <typename E>
E parse_enum(const ojson& v, const std::vector<std::pair<const char*, E>>& values, const std::string& where) {
    std::vector<std::string> names;
    for (const auto& [name, e] : values) {
        if (v == name) return e;
        names.emplace_back(name);
    }
    fail(where + ": " + repr(v) + " is not one of " + py_list(names));
}

const std::vector<std::pair<const char*, Precision>> kPrecisions = {
    {"fp32", Precision::Fp32}, {"fp16", Precision::Fp16}, {"int8-dynamic", Precision::Int8Dynamic},
    {"int8-static", Precision::Int8Static}, {"int8-static-cpu", Precision::Int8StaticCpu}};
const std::vector<std::pair<const char*, Layout>> kLayouts = {
    {"single", Layout::Single}, {"split", Layout::Split}, {"heads", Layout::Heads}};
const std::vector<std::pair<const char*, HeadKind>> kHeadKinds = {{"sentence_classification", HeadKind::Sentence},
                                                                   {"token_classification", HeadKind::Token},
                                                                   {"embedding", HeadKind::Embedding}};

std::string check_name(const ojson& v, const std::string& field_name) {
    if (!v.is_string() || v.get_ref<const std::string&>().empty())
        fail(field_name + ": expected a file name, got " + repr(v));
    const std::string name = v.get<std::string>();
    check_relative_name(name, field_name);
    return name;
}

// An optional calibration number of a head (runtime/manifest_schema.py HEAD_FIELDS: type, then range;
// runtime/manifest.py HeadInfo.from_dict), with the schema's messages.
double calibration(const ojson& d, const char* key, const std::string& where, double fallback) {
    auto it = d.find(key);
    if (it == d.end()) return fallback;
    const std::string field = where + key + ": ";
    if (!it->is_number()) fail(field + "expected int or float, got " + repr(*it));  // JSON true/false: not numbers
    const double v = it->get<double>();
    if (key == std::string("temperature") && !(v > 0.0 && v < std::numeric_limits<double>::infinity()))
        fail(field + "expected a number > 0 (a softmax temperature), got " + repr(*it));
    if (key == std::string("threshold") && !(v >= 0.0 && v <= 1.0))
        fail(field + "expected a value in [0.0, 1.0], got " + repr(*it));
    return v;
}

HeadInfo parse_head(const ojson& d, std::size_t i) {
    const std::string where = "heads[" + std::to_string(i) + "].";
    if (!d.is_object()) fail(where.substr(0, where.size() - 1) + ": expected an object, got " + repr(d));
    HeadInfo h;
    h.kind = parse_enum(get(d, "kind", where, Type::Str), kHeadKinds, where + "kind");
    const ojson& labels = get(d, "labels", where, Type::List);
    if (h.kind != HeadKind::Embedding && labels.size() < 2)
        fail(where + "labels: expected at least 2 labels, got " + repr(labels));
    h.name = get(d, "name", where, Type::Str).get<std::string>();
    h.output = get(d, "output", where, Type::Str).get<std::string>();
    for (const auto& l : labels) h.labels.push_back(l.is_string() ? l.get<std::string>() : repr(l));
    h.temperature = calibration(d, "temperature", where, 1.0);
    h.threshold = calibration(d, "threshold", where, 0.0);
    if (h.kind == HeadKind::Embedding && (h.temperature != 1.0 || h.threshold != 0.0))
        fail(where + ": the embedding has no scores to calibrate");
    return h;
}

Variant parse_variant(const ojson& d, std::size_t i) {
    const std::string where = "variants[" + std::to_string(i) + "].";
    if (!d.is_object()) fail(where.substr(0, where.size() - 1) + ": expected an object, got " + repr(d));
    Variant v;
    v.layout = parse_enum(get(d, "layout", where, Type::Str), kLayouts, where + "layout");
    const ojson& graphs = get(d, "graphs", where, Type::Dict);
    std::set<std::string> required, optional;
    if (v.layout == Layout::Single) required = {"model"};
    if (v.layout == Layout::Split) required = {"encoder", "heads"}, optional = {"token_heads"};
    if (v.layout == Layout::Heads) required = {"heads"}, optional = {"token_heads"};
    std::set<std::string> roles;
    for (const auto& [role, name] : graphs.items()) roles.insert(role);
    bool ok = std::includes(roles.begin(), roles.end(), required.begin(), required.end());
    for (const auto& r : roles) ok = ok && (required.count(r) || optional.count(r));
    if (!ok)
        fail(where + "graphs: layout " + py_str_repr(to_string(v.layout)) + " needs roles " +
             py_list({required.begin(), required.end()}) + " (optional " + py_list({optional.begin(), optional.end()}) +
             "), got " + py_list({roles.begin(), roles.end()}));
    for (const auto& [role, name] : graphs.items()) v.graphs[role] = check_name(name, where + "graphs." + role);
    v.precision = parse_enum(get(d, "precision", where, Type::Str), kPrecisions, where + "precision");
    v.opset = get(d, "opset", where, Type::Int).get<int>();
    return v;
}

std::string optional_str(const ojson& d, const char* key) {
    auto it = d.find(key);
    return (it == d.end() || !it->is_string()) ? std::string() : it->get<std::string>();
}

}  // namespace

const char* to_string(Precision p) {
    for (const auto& [name, e] : kPrecisions)
        if (e == p) return name;
    return "?";
}
const char* to_string(Layout l) {
    for (const auto& [name, e] : kLayouts)
        if (e == l) return name;
    return "?";
}
const char* to_string(HeadKind k) {
    for (const auto& [name, e] : kHeadKinds)
        if (e == k) return name;
    return "?";
}

void check_relative_name(const std::string& name, const std::string& field_name) {
    // PurePosixPath(name): absolute when it starts with "/"; its parts drop "" and "."
    bool bad = name.empty() || name[0] == '/' || name.find('\\') != std::string::npos ||
               name.substr(0, name.find('/')).find(':') != std::string::npos;
    std::size_t start = 0;
    while (!bad && start <= name.size()) {
        const std::size_t end = std::min(name.find('/', start), name.size());
        if (name.compare(start, end - start, "..") == 0 && end - start == 2) bad = true;
        start = end + 1;
    }
    if (bad) fail(field_name + ": " + py_str_repr(name) + " must be a relative path inside the bundle");
}

const FileEntry* Manifest::file(const std::string& name) const {
    for (const auto& [n, e] : files)
        if (n == name) return &e;
    return nullptr;
}

Manifest Manifest::parse(const std::string& text, const std::string& path) {
    ojson d;
    std::u32string ignored;
    if (auto bad = decode_utf8(text, ignored))
        throw bundle_error(path + ": invalid JSON ('utf-8' codec can't decode byte at position " +
                           std::to_string(bad->byte) + ": " + bad->reason + ")");
    try {
        d = ojson::parse(text);
    } catch (const ojson::parse_error& e) {
        throw bundle_error(path + ": invalid JSON (" + e.what() + ")");
    } catch (const ojson::out_of_range& e) {  // 1e400: "number overflow parsing '1e400'", as Python words it
        const std::string what = e.what();
        throw bundle_error(path + ": invalid JSON (" + what.substr(what.find(']') + 2) + ")");
    }
    if (!d.is_object()) fail("expected a JSON object, got " + py_type_name(d));
    Manifest m;
    const ojson& version = get(d, "schema_version", "", Type::Int);
    m.schema_version = version.get<int>();
    if (!version.is_number_integer() || m.schema_version < kSchemaLo || m.schema_version > kSchemaHi)
        fail("schema_version " + repr(version) + " is not supported; this runtime reads " + std::to_string(kSchemaLo) +
             ".." + std::to_string(kSchemaHi));
    for (const auto& [name, entry] : get(d, "files", "", Type::Dict).items()) {
        check_relative_name(name, "files");
        if (!entry.is_object()) fail("files." + name + ": expected an object with sha256 and bytes");
        FileEntry e;
        e.sha256 = get(entry, "sha256", "files." + name + ".", Type::Str).get<std::string>();
        e.bytes = get(entry, "bytes", "files." + name + ".", Type::Int).get<int64_t>();
        m.files.emplace_back(name, e);
    }
    const ojson& heads = get(d, "heads", "", Type::List);
    for (std::size_t i = 0; i < heads.size(); ++i) m.heads.push_back(parse_head(heads[i], i));
    const ojson& variants = get(d, "variants", "", Type::List);
    for (std::size_t i = 0; i < variants.size(); ++i) m.variants.push_back(parse_variant(variants[i], i));
    if (m.variants.empty()) fail("variants: the bundle lists no graph");
    auto named = [&](const char* key) {
        auto it = d.find(key);
        return (it == d.end() || it->is_null()) ? std::string() : check_name(*it, key);
    };
    m.tokenizer = named("tokenizer");
    m.parity = named("parity");
    m.tokenizer_tables = named("tokenizer_tables");
    std::vector<std::string> listed;
    for (const auto& v : m.variants)
        for (const auto& [role, g] : v.graphs) listed.push_back(g);
    for (const auto* x : {&m.tokenizer, &m.parity, &m.tokenizer_tables})
        if (!x->empty()) listed.push_back(*x);
    for (const auto& name : listed)
        if (!m.file(name)) fail(py_str_repr(name) + " is used but not listed in files (no sha256 to check)");
    std::vector<std::string> names;
    for (const auto& h : m.heads) names.push_back(h.name);
    if (std::set<std::string>(names.begin(), names.end()).size() != names.size())
        fail("heads: duplicate head names " + py_list(names));
    m.mtst_version = optional_str(d, "mtst_version");
    for (const auto& x : get(d, "inputs", "", Type::List)) m.inputs.push_back(x.is_string() ? x.get<std::string>() : repr(x));
    m.max_seq_len = get(d, "max_seq_len", "", Type::Int).get<int>();
    m.pooling = d.contains("pooling") && d["pooling"].is_string() ? d["pooling"].get<std::string>() : "mean";
    m.embedding_dim = get(d, "embedding_dim", "", Type::Int).get<int>();
    auto pad = d.find("pad_token_id");
    m.pad_token_id = (pad != d.end() && pad->is_number_integer()) ? pad->get<int64_t>() : 0;
    m.encoder_sha256 = optional_str(d, "encoder_sha256");
    return m;
}

Manifest Manifest::read(const std::string& bundle_dir) {
    const std::string path = bundle_dir + "/" + kManifest;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
        throw bundle_error(path + ": missing (not an mtst bundle, or an unfinished export)");
    // the Python runtime's cap (runtime/manifest_schema.py Limits.manifest_bytes), same override
    long long cap = 1LL << 20;
    if (const char* env = std::getenv("MTST_BUNDLE_MAX_MANIFEST_BYTES"); env != nullptr && std::atoll(env) > 0)
        cap = std::atoll(env);
    if (static_cast<long long>(st.st_size) > cap)
        throw bundle_error(path + ": " + std::to_string(static_cast<long long>(st.st_size)) + " bytes, over the cap of " +
                           std::to_string(cap) + " (MTST_BUNDLE_MAX_MANIFEST_BYTES)");
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return parse(ss.str(), path);
}

}  // namespace mtst::detail
