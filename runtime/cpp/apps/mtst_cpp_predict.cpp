// mtst-cpp-predict BUNDLE [TEXT... | --file FILE]: every head of a bundle for each text, one JSON object a
// line, in the schema (and byte for byte the layout) of `mtst-predict --format json`.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "mtst/engine.hpp"

namespace {

constexpr std::size_t kChunk = 256;  // texts per engine call when reading a file (as mtst-predict)

const char* kUsage = "Usage: mtst-cpp-predict [OPTIONS] BUNDLE [TEXTS]...";
const char* kHelp = R"(
  Predict every head of the bundle BUNDLE for each TEXT (or each line of --file).

  JSON output is one object per text, in input order: text, truncated, heads
  (label/score/abstained/scores for sentence heads, entities with character
  offsets for token heads). A sentence head abstains ("abstained": true) when
  its calibrated score is under its threshold.

Options:
  -f, --file TEXT               Read texts from a file, one per line ('-' = stdin).
  -p, --provider TEXT           Execution provider, repeat for a chain: tensorrt,
                                cuda, cpu (default: auto).
  --allow-fallback              Run on what is available when a named provider is
                                missing.
  --heads TEXT                  Heads to run (repeat or comma-separate; default: all).
  --precision [fp32|fp16|int8-dynamic|int8-static|int8-static-cpu]
                                Variant precision.
  --layout [single|split]       Variant layout.
  --threads INTEGER             Intra-op threads (0 = ORT's choice).  [default: 0]
  --batch-size INTEGER          [default: 32]
  --max-batch-tokens INTEGER    Padded tokens per batch (-1 = by provider, 0 = no
                                bound).  [default: -1]
  --parallel-batches INTEGER    Batches of one request run at once.  [default: 1]
  --min-entity-score FLOAT      Drop entities scored below this (mean tag
                                probability of their words).  [default: 0.0]
  --threshold HEAD=VALUE        Override a head's abstention threshold
                                (repeatable), e.g. intent=0.5.
  --no-abstain                  Thresholds off: every sentence head answers,
                                every entity is kept.
  --embedding                   Include each text's embedding in JSON output.
  --embeddings-out FILE         Also write every text's embedding to FILE as a
                                float32 .npy array (N, dim).
  --logits                      Include raw logits in JSON output.
  --no-verify                   Skip the sha256 check of the bundle's files.
  -v, --verbose                 Print the engine (variant, providers) and, at the
                                end, the peak RSS of the process and when it
                                started, had loaded and had answered (wall clock,
                                Unix seconds) on stderr.
  --version                     Print the versions and exit.
  -h, --help                    Show this message and exit.
)";

int to_int(const std::string& opt, const std::string& v) {
    try {
        std::size_t used = 0;
        const int x = std::stoi(v, &used);
        if (used == v.size()) return x;
    } catch (const std::exception&) {
    }
    throw mtst::apps::UsageError("Invalid value for '" + opt + "': '" + v + "' is not a valid integer.");
}

double to_float(const std::string& opt, const std::string& v) {
    try {
        std::size_t used = 0;
        const double x = std::stod(v, &used);
        if (used == v.size()) return x;
    } catch (const std::exception&) {
    }
    throw mtst::apps::UsageError("Invalid value for '" + opt + "': '" + v + "' is not a valid float.");
}

// repr(s) of a Python str, for the texts of command-line arguments in messages (quotes as Python picks them).
std::string py_repr(const std::string& s) {
    const char q = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
    std::string out(1, q);
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (c == q || c == '\\') out += '\\', out += c;
        else if (c == '\n') out += "\\n";
        else if (c == '\r') out += "\\r";
        else if (c == '\t') out += "\\t";
        else if (u < 0x20 || u == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", u);
            out += buf;
        } else out += c;
    }
    return out + q;
}

std::string strip(std::string s) {
    const char* ws = " \t\n\r\f\v";
    s.erase(0, s.find_first_not_of(ws));
    s.erase(s.find_last_not_of(ws) + 1);
    return s;
}

// --threshold HEAD=VALUE options -> {head: value}, with mtst-predict's messages (runtime/cli.py _thresholds).
std::map<std::string, double> parse_thresholds(const std::vector<std::string>& values) {
    std::map<std::string, double> out;
    for (const std::string& v : values) {
        const std::size_t eq = v.find('=');
        const std::string head = strip(v.substr(0, eq)), raw = eq == std::string::npos ? "" : strip(v.substr(eq + 1));
        double value = -1.0;
        char* end = nullptr;
        if (!raw.empty() && raw.find_first_of("xX") == std::string::npos) {  // float(): no hexadecimal
            const double x = std::strtod(raw.c_str(), &end);
            if (end == raw.c_str() + raw.size()) value = x;
        }
        if (eq == std::string::npos || head.empty() || !(value >= 0.0 && value <= 1.0))
            throw mtst::apps::UsageError("Invalid value for --threshold: " + py_repr(v) +
                                         ": expected HEAD=VALUE with VALUE in [0, 1]");
        if (!out.emplace(head, value).second)
            throw mtst::apps::UsageError("Invalid value for --threshold: head " + py_repr(head) + " given twice");
    }
    return out;
}

// The embeddings of all texts as a .npy file (format 1.0: magic, header dict padded to 64 bytes, data).
class NpyWriter {
public:
    void add(const std::vector<float>& row) {
        dim_ = row.size();
        data_.insert(data_.end(), row.begin(), row.end());
        ++rows_;
    }
    void write(const std::string& path) const {
        std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows_) + ", " +
                             std::to_string(dim_) + "), }";
        const std::size_t total = 10 + header.size() + 1;
        header.append((64 - total % 64) % 64, ' ');
        header.push_back('\n');
        std::ofstream f(path, std::ios::binary);
        const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
        const auto len = static_cast<uint16_t>(header.size());
        f.write(reinterpret_cast<const char*>(magic), 8);
        const char len_le[2] = {static_cast<char>(len & 0xFF), static_cast<char>(len >> 8)};
        f.write(len_le, 2);
        f << header;
        f.write(reinterpret_cast<const char*>(data_.data()), static_cast<std::streamsize>(data_.size() * sizeof(float)));
        if (!f) throw std::runtime_error(path + ": cannot be written");
    }

private:
    std::vector<float> data_;
    std::size_t rows_ = 0, dim_ = 0;
};

void emit(const std::vector<mtst::Prediction>& preds, const mtst::PredictOptions& po, bool json_embedding,
          NpyWriter* npy) {
    std::string out;
    for (const auto& p : preds) {
        out += p.to_json(json_embedding, po.return_logits);
        out.push_back('\n');
        if (npy) npy->add(p.embedding);
    }
    std::cout << out;
}

// The process's peak resident set (VmHWM, kB) on Linux; -1 elsewhere.
long peak_rss_kb() {
    std::ifstream f("/proc/self/status");
    for (std::string line; std::getline(f, line);)
        if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
    return -1;
}

// Wall-clock time in Unix seconds (comparable with another process's, e.g. a benchmark's time.time()).
double unix_seconds() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void report(double started, double loaded) {
    const double answered = unix_seconds();
    std::cerr << "peak RSS " << peak_rss_kb() << " kB\n"
              << std::fixed << std::setprecision(6) << "times: started " << started << " loaded " << loaded
              << " answered " << answered << "\n";
}

int run(int argc, char** argv, double started) {
    std::vector<std::string> positional, providers, thresholds;
    std::string file, npy_path;
    bool has_file = false, verbose = false, json_embedding = false;
    mtst::LoadOptions lo;
    mtst::PredictOptions po;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&](const std::string& opt) -> std::string {
            if (i + 1 >= argc) throw mtst::apps::UsageError("Option '" + opt + "' requires an argument.");
            return argv[++i];
        };
        if (a == "-h" || a == "--help") {
            std::cout << kUsage << "\n" << kHelp;
            return 0;
        } else if (a == "--version") {
            std::cout << "mtst-cpp-predict " << mtst::version() << " (onnxruntime " << mtst::onnxruntime_version() << ")\n";
            return 0;
        } else if (a == "-f" || a == "--file") {
            file = value(a), has_file = true;
        } else if (a == "-p" || a == "--provider") {
            providers.push_back(value(a));
        } else if (a == "--allow-fallback") {
            lo.allow_fallback = true;
        } else if (a == "--heads") {
            std::string spec = value(a);
            std::size_t start = 0;
            while (start <= spec.size()) {
                const std::size_t end = std::min(spec.find(',', start), spec.size());
                std::string h = spec.substr(start, end - start);
                h.erase(0, h.find_first_not_of(" \t"));
                h.erase(h.find_last_not_of(" \t") + 1);
                if (!h.empty()) po.heads.push_back(h);
                start = end + 1;
            }
        } else if (a == "--precision") {
            lo.precision = value(a);
        } else if (a == "--layout") {
            lo.layout = value(a);
        } else if (a == "--threads") {
            lo.intra_op_threads = to_int(a, value(a));
        } else if (a == "--batch-size") {
            lo.batch_size = to_int(a, value(a));
        } else if (a == "--max-batch-tokens") {
            lo.max_batch_tokens = to_int(a, value(a));
        } else if (a == "--parallel-batches") {
            lo.parallel_batches = to_int(a, value(a));
        } else if (a == "--min-entity-score") {
            po.min_entity_score = to_float(a, value(a));
            if (!(po.min_entity_score >= 0.0 && po.min_entity_score <= 1.0))
                throw mtst::apps::UsageError("Invalid value for '--min-entity-score': " + std::string(argv[i]) +
                                             " is not in the range 0.0<=x<=1.0.");
        } else if (a == "--threshold") {
            thresholds.push_back(value(a));
        } else if (a == "--no-abstain") {
            po.abstain = false;
        } else if (a == "--embedding") {
            po.return_embedding = json_embedding = true;
        } else if (a == "--embeddings-out") {
            npy_path = value(a);
            po.return_embedding = true;
        } else if (a == "--logits") {
            po.return_logits = true;
        } else if (a == "--no-verify") {
            lo.verify = false;
        } else if (a == "-v" || a == "--verbose") {
            verbose = true;
        } else if (a == "--") {
            for (++i; i < argc; ++i) positional.emplace_back(argv[i]);
        } else if (a.size() > 1 && a[0] == '-' && a != "-") {
            throw mtst::apps::UsageError("No such option: " + a);
        } else {
            positional.push_back(a);
        }
    }
    if (positional.empty()) throw mtst::apps::UsageError("Missing argument 'BUNDLE'.");
    const std::string bundle = positional.front();
    std::vector<std::string> texts(positional.begin() + 1, positional.end());
    if (texts.size() == 1 && texts[0] == "-" && !has_file) texts.clear(), file = "-", has_file = true;
    if (!texts.empty() && has_file) throw mtst::apps::UsageError("give texts as arguments or --file, not both");
    if (texts.empty() && !has_file)
        throw mtst::apps::UsageError("nothing to predict: give TEXT arguments, --file F, or --file - for stdin");
    po.thresholds = parse_thresholds(thresholds);
    if (!providers.empty()) lo.providers = providers;

    const mtst::Engine engine = mtst::Engine::load(bundle, lo);
    const double loaded = unix_seconds();
    if (verbose) {
        std::string providers_list;
        for (const auto& p : engine.active_providers()) providers_list += (providers_list.empty() ? "" : ", ") + p;
        std::cerr << "loaded " << engine.bundle_root() << ": variant " << engine.variant() << ", providers ["
                  << providers_list << "]\n";
    }
    NpyWriter npy;
    NpyWriter* npy_out = npy_path.empty() ? nullptr : &npy;
    if (!texts.empty()) {
        emit(engine.predict(texts, po), po, json_embedding, npy_out);
        if (npy_out) npy.write(npy_path);
        std::cout.flush();
        if (verbose) report(started, loaded);
        return 0;
    }
    std::ifstream f;
    std::istream* in = &std::cin;
    if (file != "-") {
        f.open(file, std::ios::binary);
        if (!f) throw mtst::apps::UsageError("Invalid value for '--file': " + file + ": No such file or directory");
        in = &f;
    }
    std::size_t done = 0;
    mtst::apps::read_lines(*in, file == "-" ? "<stdin>" : file, kChunk, [&](std::vector<std::string>& chunk) {
        try {
            emit(engine.predict(chunk, po), po, json_embedding, npy_out);
        } catch (const mtst::Error& e) {
            if (e.kind() != mtst::ErrorKind::Input) throw;
            throw std::runtime_error(file + " (lines " + std::to_string(done + 1) + ".." +
                                     std::to_string(done + chunk.size()) + "): " + e.what());
        }
        done += chunk.size();
    });
    if (npy_out) npy.write(npy_path);
    std::cout.flush();
    if (verbose) report(started, loaded);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const double started = unix_seconds();
    std::ios::sync_with_stdio(false);
    try {
        return run(argc, argv, started);
    } catch (const mtst::apps::UsageError& e) {
        std::cout.flush();
        std::cerr << kUsage << "\nTry 'mtst-cpp-predict -h' for help.\n\nError: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cout.flush();
        std::cerr << "Error: " << e.what() << "\n";
        return 1;
    }
}
