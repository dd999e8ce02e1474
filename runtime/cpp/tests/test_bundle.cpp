// Manifest reading and bundle verification: tampered, missing and traversal bundles are refused with the
// Python runtime's messages (runtime/manifest.py, runtime/bundle.py, runtime/onnx_refs.py).
#include <cstdio>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "bundle.hpp"
#include "check.hpp"
#include "pyformat.hpp"

using mtst::detail::load_bundle;
using mtst::detail::Manifest;
using json = nlohmann::ordered_json;

namespace {

const std::string kModel("\x08\x08", 2);  // a ModelProto holding only ir_version = 8

std::string tmp_dir() {
    char tmpl[] = "/tmp/mtst-test-XXXXXX";
    return ::mkdtemp(tmpl);
}

void write(const std::string& path, const std::string& data) {
    std::ofstream(path, std::ios::binary) << data;
}

// A bundle whose files verify: model.onnx, tokenizer.json, manifest.json (edit `m` before write_manifest)
struct Fake {
    std::string root = tmp_dir();
    json m;
    Fake() {
        write(root + "/model.onnx", kModel);
        write(root + "/tokenizer.json", "{}");
        m = json::parse(R"({
          "schema_version": 1, "mtst_version": "test", "inputs": ["input_ids", "attention_mask"],
          "max_seq_len": 16, "pooling": "mean", "embedding_dim": 8, "tokenizer": "tokenizer.json",
          "pad_token_id": 0,
          "heads": [{"name": "intent", "kind": "sentence_classification", "output": "intent", "labels": ["a", "b"]}],
          "variants": [{"precision": "fp32", "layout": "single", "graphs": {"model": "model.onnx"}, "opset": 17}],
          "files": {}, "encoder_sha256": null, "parity": null, "provenance": {}})");
        list("model.onnx");
        list("tokenizer.json");
    }
    void list(const std::string& name) {
        std::ifstream f(root + "/" + name, std::ios::binary);
        const std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        m["files"][name] = {{"sha256", mtst::detail::hash_file(root + "/" + name)}, {"bytes", data.size()}};
    }
    std::string write_manifest() const {
        write(root + "/manifest.json", m.dump(2));
        return root;
    }
};

}  // namespace

TEST(a_well_formed_bundle_verifies) {
    Fake f;
    const auto b = load_bundle(f.write_manifest());
    CHECK(b.verified);
    CHECK_EQ(b.manifest.variants.at(0).key(), "fp32/single");
    CHECK_EQ(b.manifest.heads.at(0).labels.size(), 2u);
    CHECK(b.manifest.tokenizer_tables.empty());  // optional: bundles from before the C++ runtime
}

TEST(not_a_folder_or_no_manifest) {
    CHECK_ERROR(load_bundle("/nonexistent/bundle/"),
                "/nonexistent/bundle: not a directory (a bundle is a folder holding manifest.json)");
    const std::string empty = tmp_dir();
    CHECK_ERROR(load_bundle(empty), empty + "/manifest.json: missing (not an mtst bundle, or an unfinished export)");
}

TEST(tampered_file_is_refused_by_hash) {
    Fake f;
    f.write_manifest();
    write(f.root + "/tokenizer.json", "[]");  // same size, other bytes
    const std::string want = f.m["files"]["tokenizer.json"]["sha256"];
    CHECK_ERROR(load_bundle(f.root),
                f.root + ": tokenizer.json: sha256 mismatch: expected " + want +
                    ", got 4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945 (changed after export)");
}

TEST(truncated_or_missing_file_is_refused) {
    Fake f;
    f.write_manifest();
    write(f.root + "/tokenizer.json", "{ }");
    CHECK_ERROR(load_bundle(f.root), f.root +
                                         ": tokenizer.json: size mismatch: manifest.json lists 2 bytes, the file has 3 "
                                         "(changed or truncated after export)");
    ::unlink((f.root + "/tokenizer.json").c_str());
    CHECK_ERROR(load_bundle(f.root), f.root + ": tokenizer.json: listed in manifest.json but missing");
}

TEST(traversal_and_absolute_names_are_refused) {
    for (const std::string bad : {"../outside.onnx", "/etc/passwd", "a/../../b", "C:evil", "a\\b"}) {
        Fake f;
        f.m["variants"][0]["graphs"]["model"] = bad;
        CHECK_ERROR(load_bundle(f.write_manifest()), "manifest.json: variants[0].graphs.model: " +
                                                         mtst::detail::py_str_repr(bad) +
                                                         " must be a relative path inside the bundle");
    }
    Fake f;
    f.m["files"]["../x"] = {{"sha256", "0"}, {"bytes", 1}};
    CHECK_ERROR(load_bundle(f.write_manifest()), "manifest.json: files: '../x' must be a relative path inside the bundle");
}

TEST(symlink_leaving_the_bundle_is_refused) {
    Fake f;
    const std::string outside = tmp_dir() + "/tokenizer.json";
    write(outside, "{}");
    ::unlink((f.root + "/tokenizer.json").c_str());
    CHECK(::symlink(outside.c_str(), (f.root + "/tokenizer.json").c_str()) == 0);
    CHECK_ERROR(load_bundle(f.write_manifest()), f.root + ": tokenizer.json: resolves to " + outside +
                                                     ", outside the bundle (symlinks may not leave it)");
}

TEST(unlisted_graph_is_refused) {
    Fake f;
    write(f.root + "/stray.onnx", kModel);
    ::mkdir((f.root + "/sub").c_str(), 0755);
    write(f.root + "/sub/other.onnx", kModel);
    CHECK_ERROR(load_bundle(f.write_manifest()),
                f.root + ": graph files not listed in manifest.json: ['stray.onnx', 'sub/other.onnx'] (remove them or re-export)");
}

TEST(external_data_must_be_listed_and_inside) {
    // ModelProto { graph (7) { initializer (5) { name (8) "w", external_data (13) { key "location", value LOC } } } }
    auto model = [](const std::string& loc) {
        const std::string kv = std::string("\x0a\x08location", 10) + "\x12" + static_cast<char>(loc.size()) + loc;
        const std::string tensor = std::string("\x42\x01w", 3) + "\x6a" + static_cast<char>(kv.size()) + kv;
        const std::string graph = std::string("\x2a") + static_cast<char>(tensor.size()) + tensor;
        return std::string("\x3a") + static_cast<char>(graph.size()) + graph;
    };
    {
        Fake f;
        write(f.root + "/model.onnx", model("weights.bin"));
        f.list("model.onnx");
        CHECK_ERROR(load_bundle(f.write_manifest()),
                    f.root + ": model.onnx: tensor 'w': external data 'weights.bin': 'weights.bin' is not listed in "
                             "manifest.json files (no sha256 to check it against)");
    }
    {
        Fake f;
        write(f.root + "/model.onnx", model("../w.bin"));
        f.list("model.onnx");
        CHECK_ERROR(load_bundle(f.write_manifest()),
                    f.root + ": model.onnx: tensor 'w': external data '../w.bin' must be a relative path inside the bundle");
    }
    {
        Fake f;
        write(f.root + "/model.onnx", model("weights.bin"));
        write(f.root + "/weights.bin", "0123");
        f.list("model.onnx");
        f.list("weights.bin");
        CHECK(load_bundle(f.write_manifest()).verified);
    }
}

TEST(malformed_graph_is_refused) {
    Fake f;
    write(f.root + "/model.onnx", "\x3a\x7f");  // a field that runs past the file
    f.list("model.onnx");
    CHECK_ERROR(load_bundle(f.write_manifest()), f.root + "/model.onnx: not a valid ONNX model (field 7 at byte 2 "
                                                          "runs past its message (127 bytes))");
    write(f.root + "/model.onnx", "");
    f.list("model.onnx");
    CHECK_ERROR(load_bundle(f.write_manifest()), f.root + "/model.onnx: empty file, expected an ONNX model");
}

TEST(manifest_fields_are_checked_with_python_messages) {
    auto err = [](const std::function<void(json&)>& edit, const std::string& want) {
        Fake f;
        edit(f.m);
        CHECK_ERROR(load_bundle(f.write_manifest()), want);
    };
    err([](json& m) { m["schema_version"] = 2; },
        "manifest.json: schema_version 2 is not supported; this runtime reads 1..1");
    err([](json& m) { m["schema_version"] = "1"; }, "manifest.json: schema_version: expected int, got '1'");
    err([](json& m) { m.erase("max_seq_len"); }, "manifest.json: max_seq_len: missing");
    err([](json& m) { m["embedding_dim"] = 8.0; }, "manifest.json: embedding_dim: expected int, got 8.0");
    err([](json& m) { m["variants"][0]["layout"] = "bogus"; },
        "manifest.json: variants[0].layout: 'bogus' is not one of ['single', 'split', 'heads']");
    err([](json& m) { m["variants"][0]["precision"] = "int4"; },
        "manifest.json: variants[0].precision: 'int4' is not one of ['fp32', 'fp16', 'int8-dynamic', 'int8-static', 'int8-static-cpu']");
    err([](json& m) { m["variants"][0]["graphs"] = {{"encoder", "model.onnx"}}; },
        "manifest.json: variants[0].graphs: layout 'single' needs roles ['model'] (optional []), got ['encoder']");
    err([](json& m) { m["variants"] = json::array(); }, "manifest.json: variants: the bundle lists no graph");
    err([](json& m) { m["heads"][0]["labels"] = {"only"}; },
        "manifest.json: heads[0].labels: expected at least 2 labels, got ['only']");
    err([](json& m) { m["heads"][0]["kind"] = "regression"; },
        "manifest.json: heads[0].kind: 'regression' is not one of ['sentence_classification', 'token_classification', "
        "'embedding']");
    err([](json& m) { m["heads"].push_back(m["heads"][0]); },
        "manifest.json: heads: duplicate head names ['intent', 'intent']");
    err([](json& m) { m["parity"] = "parity.json"; },
        "manifest.json: 'parity.json' is used but not listed in files (no sha256 to check)");
    err([](json& m) { m["tokenizer_tables"] = "tables.json"; },
        "manifest.json: 'tables.json' is used but not listed in files (no sha256 to check)");
    err([](json& m) { m["files"]["model.onnx"] = "x"; }, "manifest.json: files.model.onnx: expected an object with sha256 and bytes");
    err([](json& m) { m["files"]["model.onnx"].erase("bytes"); }, "manifest.json: files.model.onnx.bytes: missing");
    err([](json& m) { m = json::array(); }, "manifest.json: expected a JSON object, got list");
}

TEST(invalid_json_names_the_file) {
    Fake f;
    f.write_manifest();
    write(f.root + "/manifest.json", "{not json");
    try {
        load_bundle(f.root);
        CHECK(false);
    } catch (const mtst::Error& e) {
        CHECK(std::string(e.what()).rfind(f.root + "/manifest.json: invalid JSON (", 0) == 0);
        CHECK(e.kind() == mtst::ErrorKind::Bundle);
    }
}

CHECK_MAIN
