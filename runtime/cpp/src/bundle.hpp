// A bundle folder, read and verified exactly as runtime/bundle.py verifies it:
//   1. manifest.json (Manifest::read);
//   2. every listed file: stays inside the bundle (symlinks included), is a regular file, has the listed
//      size and sha256;
//   3. every graph: its external-data files stay inside the bundle and are listed;
//   4. no unlisted *.onnx file lies in the folder.
// Hashes verified in this process are remembered (path, size, mtime, ctime, inode), as in Python.
#pragma once

#include <string>
#include <vector>

#include "manifest.hpp"

namespace mtst::detail {

struct Bundle {
    std::string root;  // real path of the folder
    Manifest manifest;
    bool verified = false;
    std::string path(const std::string& name) const { return root + "/" + name; }
};

Bundle load_bundle(const std::string& path, bool verify = true);

// The error of a bundle without tokenizer tables (exported before the C++ runtime existed).
std::string no_tables_message(const std::string& root);
void verify_bundle(const std::string& root, const Manifest& manifest);

// sha256 (hex) of a file, remembered while its size, times and inode stay the same.
std::string hash_file(const std::string& path);

struct ExternalRef {
    std::string tensor;    // tensor (initializer) name
    std::string location;  // file name as written in the graph, relative to the graph's folder
};

// Every external-data location named inside the ONNX file at `path` (runtime/onnx_refs.py).
std::vector<ExternalRef> external_data_refs(const std::string& path);

}  // namespace mtst::detail
