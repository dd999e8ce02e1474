#include "bundle.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <set>
#include <sys/stat.h>
#include <tuple>
#include <unistd.h>

#include <openssl/evp.h>

#include "mtst/error.hpp"
#include "pyformat.hpp"

namespace mtst::detail {

namespace {

constexpr const char* kManifest = "manifest.json";
constexpr std::size_t kHashBuffer = 1 << 22;  // 4 MiB reads

using CacheKey = std::tuple<std::string, int64_t, int64_t, int64_t, uint64_t>;
std::mutex g_hash_lock;
std::map<CacheKey, std::string> g_hash_cache;

int64_t ns(const struct timespec& t) { return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec; }

std::string real_path(const std::string& p) {
    char* r = ::realpath(p.c_str(), nullptr);
    if (!r) return p;
    std::string out(r);
    std::free(r);
    return out;
}

bool inside(const std::string& root, const std::string& path) {
    return path == root || (path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
                            (root.back() == '/' || path[root.size()] == '/'));
}

std::string sha256_of(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw bundle_error(path + ": cannot be read (" + std::strerror(errno) + ")");
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
    std::vector<unsigned char> buf(kHashBuffer);
    ssize_t n;
    while ((n = ::read(fd, buf.data(), buf.size())) > 0) EVP_DigestUpdate(ctx, buf.data(), static_cast<std::size_t>(n));
    ::close(fd);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, digest, &len);
    EVP_MD_CTX_free(ctx);
    if (n < 0) throw bundle_error(path + ": read error (" + std::strerror(errno) + ")");
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < len; ++i) {
        out.push_back(hex[digest[i] >> 4]);
        out.push_back(hex[digest[i] & 15]);
    }
    return out;
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

void check_listed_file(const std::string& root, const std::string& name, const FileEntry& entry) {
    const std::string path = root + "/" + name;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {  // follows symlinks: what ONNX Runtime would read
        if (errno == ENOENT) throw bundle_error(root + ": " + name + ": listed in " + kManifest + " but missing");
        throw bundle_error(root + ": " + name + ": cannot be read (" + std::strerror(errno) + ")");
    }
    const std::string real = real_path(path);
    if (!inside(root, real))
        throw bundle_error(root + ": " + name + ": resolves to " + real +
                           ", outside the bundle (symlinks may not leave it)");
    if (!S_ISREG(st.st_mode)) throw bundle_error(root + ": " + name + ": not a regular file");
    if (st.st_size != entry.bytes)
        throw bundle_error(root + ": " + name + ": size mismatch: " + kManifest + " lists " + std::to_string(entry.bytes) +
                           " bytes, the file has " + std::to_string(st.st_size) + " (changed or truncated after export)");
    const std::string actual = hash_file(real);
    if (actual != lower(entry.sha256))
        throw bundle_error(root + ": " + name + ": sha256 mismatch: expected " + entry.sha256 + ", got " + actual +
                           " (changed after export)");
}

// parent folder of a manifest name ("a/b.onnx" -> "a", "b.onnx" -> "")
std::string parent_of(const std::string& name) {
    const auto slash = name.rfind('/');
    return slash == std::string::npos ? std::string() : name.substr(0, slash);
}

// PurePosixPath(base) / PurePosixPath(loc) as text ("." and empty parts dropped)
std::string join_posix(const std::string& base, const std::string& loc) {
    std::vector<std::string> parts;
    for (const std::string& s : {base, loc}) {
        std::size_t start = 0;
        while (start <= s.size()) {
            const std::size_t end = std::min(s.find('/', start), s.size());
            const std::string part = s.substr(start, end - start);
            if (!part.empty() && part != ".") parts.push_back(part);
            start = end + 1;
        }
    }
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "" : "/") + p;
    return out.empty() ? "." : out;
}

void check_external_data(const std::string& root, const Manifest& m, const std::string& graph) {
    const std::string graph_path = root + "/" + graph;
    const std::string base = parent_of(graph);
    for (const ExternalRef& ref : external_data_refs(graph_path)) {
        const std::string& loc = ref.location;
        const std::string where = root + ": " + graph + ": tensor " + py_str_repr(ref.tensor) + ": external data " +
                                  py_str_repr(loc);
        bool bad = loc.empty() || loc[0] == '/' || loc.find('\\') != std::string::npos ||
                   (loc.size() > 1 && loc[1] == ':');
        std::size_t start = 0;
        while (!bad && start <= loc.size()) {
            const std::size_t end = std::min(loc.find('/', start), loc.size());
            bad = loc.compare(start, end - start, "..") == 0 && end - start == 2;
            start = end + 1;
        }
        if (bad) throw bundle_error(where + " must be a relative path inside the bundle");
        const std::string name = join_posix(base, loc);
        if (!m.file(name))
            throw bundle_error(where + ": " + py_str_repr(name) + " is not listed in " + kManifest +
                               " files (no sha256 to check it against)");
    }
}

// *.onnx files under dir (relative names), not following symlinked folders, skipping hidden folders
void find_graphs(const std::string& root, const std::string& rel, std::vector<std::string>& out) {
    const std::string dir = rel.empty() ? root : root + "/" + rel;
    DIR* d = ::opendir(dir.c_str());
    if (!d) return;
    std::vector<std::string> subdirs;
    while (dirent* e = ::readdir(d)) {
        const std::string fn = e->d_name;
        if (fn == "." || fn == "..") continue;
        const std::string name = rel.empty() ? fn : rel + "/" + fn;
        struct stat lst {}, st {};
        if (::lstat((root + "/" + name).c_str(), &lst) != 0) continue;
        if (S_ISDIR(lst.st_mode)) {
            if (fn[0] != '.') subdirs.push_back(name);
            continue;
        }
        // os.walk lists symlinks to folders as folders (not walked); everything else is a file name
        if (S_ISLNK(lst.st_mode) && ::stat((root + "/" + name).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) continue;
        if (fn.size() >= 5 && fn.compare(fn.size() - 5, 5, ".onnx") == 0) out.push_back(name);
    }
    ::closedir(d);
    for (const auto& s : subdirs) find_graphs(root, s, out);
}

// str(pathlib.Path(p)): repeated and trailing slashes and "." parts dropped
std::string py_path(const std::string& p) {
    std::string out = (!p.empty() && p[0] == '/') ? "/" : "";
    std::size_t start = 0;
    while (start <= p.size()) {
        const std::size_t end = std::min(p.find('/', start), p.size());
        const std::string part = p.substr(start, end - start);
        if (!part.empty() && part != ".") out += (out.empty() || out == "/" ? "" : "/") + part;
        start = end + 1;
    }
    return out.empty() ? "." : out;
}

}  // namespace

std::string hash_file(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) throw bundle_error(path + ": cannot be read (" + std::strerror(errno) + ")");
    const CacheKey key{path, static_cast<int64_t>(st.st_size), ns(st.st_mtim), ns(st.st_ctim),
                       static_cast<uint64_t>(st.st_ino)};
    {
        std::lock_guard<std::mutex> lock(g_hash_lock);
        auto it = g_hash_cache.find(key);
        if (it != g_hash_cache.end()) return it->second;
    }
    std::string digest = sha256_of(path);
    std::lock_guard<std::mutex> lock(g_hash_lock);
    g_hash_cache[key] = digest;
    return digest;
}

void verify_bundle(const std::string& root_in, const Manifest& m) {
    const std::string root = real_path(root_in);
    for (const auto& [name, entry] : m.files) check_listed_file(root, name, entry);
    std::set<std::string> graphs;
    for (const auto& v : m.variants)
        for (const auto& [role, g] : v.graphs) graphs.insert(g);
    for (const auto& g : graphs) check_external_data(root, m, g);
    std::vector<std::string> found, unlisted;
    find_graphs(root, "", found);
    for (const auto& f : found)
        if (!m.file(f)) unlisted.push_back(f);
    std::sort(unlisted.begin(), unlisted.end());
    if (!unlisted.empty())
        throw bundle_error(root + ": graph files not listed in " + kManifest + ": " + py_list(unlisted) +
                           " (remove them or re-export)");
}

std::string no_tables_message(const std::string& root) {
    return root + "/" + kManifest +
           ": tokenizer_tables: the bundle has no tokenizer tables, which the C++ runtime needs (export it again "
           "with this mtst: mtst-export writes tokenizer.tables.json for WordPiece tokenizers)";
}

Bundle load_bundle(const std::string& path, bool verify) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw bundle_error(py_path(path) + ": not a directory (a bundle is a folder holding " + kManifest + ")");
    Bundle b;
    b.root = real_path(path);
    b.manifest = Manifest::read(b.root);
    if (verify) verify_bundle(b.root, b.manifest);
    b.verified = verify;
    return b;
}

}  // namespace mtst::detail
