// External-data references of an ONNX file, read straight from the protobuf wire format, as
// runtime/onnx_refs.py reads them (same containers walked, same messages). Field numbers follow
// onnx/onnx.proto: ModelProto graph 7, training_info 20, functions 25; TrainingInfoProto 1, 2 (graphs);
// FunctionProto node 7; GraphProto node 1, initializer 5, sparse_initializer 15; NodeProto attribute 5;
// AttributeProto t 5, g 6, tensors 10, graphs 11, sparse_tensor 22, sparse_tensors 23;
// SparseTensorProto values 1, indices 2; TensorProto name 8, external_data 13 (key 1, value 2).
#include <cstdint>
#include <fcntl.h>
#include <map>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bundle.hpp"
#include "mtst/error.hpp"
#include "utf8.hpp"

namespace mtst::detail {

namespace {

constexpr int kVarint = 0, kI64 = 1, kLen = 2, kI32 = 5;
constexpr int kMaxDepth = 64;

enum class Kind { Model, Training, Function, Graph, Node, Attribute, Sparse, Tensor };

const std::map<Kind, std::map<uint64_t, Kind>> kChildren = {
    {Kind::Model, {{7, Kind::Graph}, {20, Kind::Training}, {25, Kind::Function}}},
    {Kind::Training, {{1, Kind::Graph}, {2, Kind::Graph}}},
    {Kind::Function, {{7, Kind::Node}, {11, Kind::Attribute}}},  // attribute_proto: defaults may hold tensors
    {Kind::Graph, {{1, Kind::Node}, {5, Kind::Tensor}, {15, Kind::Sparse}}},
    {Kind::Node, {{5, Kind::Attribute}}},
    {Kind::Attribute,
     {{5, Kind::Tensor}, {6, Kind::Graph}, {10, Kind::Tensor}, {11, Kind::Graph}, {22, Kind::Sparse}, {23, Kind::Sparse}}},
    {Kind::Sparse, {{1, Kind::Tensor}, {2, Kind::Tensor}}},
};

struct Malformed {
    std::string what;
};

struct Field {
    uint64_t number;
    int wire;
    uint64_t a, b;  // value start and end (LEN); start and varint value (VARINT)
};

class Reader {
public:
    Reader(const uint8_t* buf) : buf_(buf) {}

    uint64_t varint(uint64_t& pos, uint64_t end) const {
        uint64_t value = 0;
        int shift = 0;
        while (true) {
            if (pos >= end || shift > 63) throw Malformed{"truncated varint at byte " + std::to_string(pos)};
            const uint8_t b = buf_[pos++];
            value |= static_cast<uint64_t>(b & 0x7F) << shift;
            if (b < 0x80) return value;
            shift += 7;
        }
    }

    // every field of the message in [start, end), as runtime/onnx_refs.py _fields yields them
    template <typename F>
    void fields(uint64_t start, uint64_t end, F&& fn) const {
        uint64_t pos = start;
        while (pos < end) {
            const uint64_t key = varint(pos, end);
            const uint64_t number = key >> 3;
            const int wire = static_cast<int>(key & 7);
            if (wire == kVarint) {
                const uint64_t value = varint(pos, end);
                fn(Field{number, wire, pos, value});
            } else if (wire == kLen) {
                const uint64_t length = varint(pos, end);
                if (pos + length > end)
                    throw Malformed{"field " + std::to_string(number) + " at byte " + std::to_string(pos) +
                                    " runs past its message (" + std::to_string(length) + " bytes)"};
                fn(Field{number, wire, pos, pos + length});
                pos += length;
            } else if (wire == kI64) {
                pos += 8;
            } else if (wire == kI32) {
                pos += 4;
            } else {
                throw Malformed{"unsupported wire type " + std::to_string(wire) + " for field " + std::to_string(number) +
                                " at byte " + std::to_string(pos)};
            }
        }
        if (pos != end)
            throw Malformed{"message ends at byte " + std::to_string(pos) + ", expected " + std::to_string(end)};
    }

    std::string text(uint64_t a, uint64_t b) const {
        std::string s(reinterpret_cast<const char*>(buf_ + a), b - a);
        std::u32string ignored;
        if (decode_utf8(s, ignored)) throw Malformed{"invalid UTF-8 string at byte " + std::to_string(a)};
        return s;
    }

    void tensor(uint64_t start, uint64_t end, std::vector<ExternalRef>& out) const {
        std::string name;
        std::vector<std::string> locations;
        fields(start, end, [&](const Field& f) {
            if (f.number == 8 && f.wire == kLen) {
                name = text(f.a, f.b);
            } else if (f.number == 13 && f.wire == kLen) {
                std::string key, value;
                bool has_key = false, has_value = false;
                fields(f.a, f.b, [&](const Field& g) {
                    if (g.wire == kLen && g.number == 1) key = text(g.a, g.b), has_key = true;
                    else if (g.wire == kLen && g.number == 2) value = text(g.a, g.b), has_value = true;
                });
                if (has_key && key == "location" && has_value) locations.push_back(value);
            }
        });
        for (auto& loc : locations) out.push_back({name, loc});
    }

    void walk(Kind kind, uint64_t start, uint64_t end, std::vector<ExternalRef>& out, int depth) const {
        if (depth > kMaxDepth) throw Malformed{"messages nested deeper than " + std::to_string(kMaxDepth) + " levels"};
        const auto& children = kChildren.at(kind);
        fields(start, end, [&](const Field& f) {
            if (f.wire != kLen) return;
            auto it = children.find(f.number);
            if (it == children.end()) return;
            if (it->second == Kind::Tensor) tensor(f.a, f.b, out);
            else walk(it->second, f.a, f.b, out, depth + 1);
        });
    }

private:
    const uint8_t* buf_;
};

}  // namespace

std::vector<ExternalRef> external_data_refs(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw bundle_error(path + ": cannot be read");
    struct stat st {};
    ::fstat(fd, &st);
    const auto size = static_cast<uint64_t>(st.st_size);
    if (size == 0) {
        ::close(fd);
        throw bundle_error(path + ": empty file, expected an ONNX model");
    }
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (map == MAP_FAILED) throw bundle_error(path + ": cannot be read");
    std::vector<ExternalRef> out;
    std::string problem;
    try {
        Reader(static_cast<const uint8_t*>(map)).walk(Kind::Model, 0, size, out, 0);
    } catch (const Malformed& m) {
        problem = m.what;
    }
    ::munmap(map, size);
    if (!problem.empty()) throw bundle_error(path + ": not a valid ONNX model (" + problem + ")");
    return out;
}

}  // namespace mtst::detail
