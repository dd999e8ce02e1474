// WordPiece tokenization, step for step as the Hugging Face tokenizers library does it (see tokenizer.hpp).
//
// Offsets: every normalized character carries the code-point range of the original text it came from
// (its "alignment"), updated by each normalization step with the library's rules:
//   - a kept or replaced character keeps its alignment, an inserted one (the spaces around a CJK
//     character, the extra characters of a lowercase or NFD expansion) takes the alignment of the last
//     original character consumed so far -- or (start, start) of the segment when none was consumed;
//   - NFD reorders combining marks together with their "inserted" flags, while the original characters
//     are consumed in order: after a reordering, a mark may carry its neighbour's alignment;
//   - a token spans from its first character's alignment start to its last character's alignment end.
#include "mtst/tokenizer.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "bundle.hpp"
#include "pyformat.hpp"
#include "unicode_tables.hpp"
#include "utf8.hpp"

namespace mtst {

namespace {

using json = nlohmann::json;
using detail::UnicodeTables;

// A text is cut (at whitespace) before tokenization once it is this many code points per allowed token
// long (runtime/tokenize.py: _CHARS_PER_TOKEN_BOUND).
constexpr std::size_t kCharsPerTokenBound = 32;

struct NChar {
    char32_t c;
    int64_t start, end;  // alignment: code-point range of the original text
};

struct Template {
    bool sequence;              // the text's own tokens ("A"), else special tokens
    std::vector<int64_t> ids;   // special token ids
    int64_t type_id = 0;
};

struct AddedToken {
    std::u32string content;
    int64_t id;
};

[[noreturn]] void fail(const std::string& path, const std::string& what) { throw bundle_error(path + ": " + what); }

json read_json(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail(path, "cannot be read");
    std::stringstream ss;
    ss << f.rdbuf();
    try {
        return json::parse(ss.str());
    } catch (const json::parse_error& e) {
        fail(path, std::string("not a Hugging Face tokenizers file (invalid JSON: ") + e.what() + ")");
    }
}

std::string type_of(const json& j) {
    if (j.is_null()) return "None";
    auto it = j.find("type");
    return it == j.end() ? "?" : detail::py_repr(*it);
}

bool flag(const json& obj, const char* key, bool dflt) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return dflt;
    return it->get<bool>();
}

}  // namespace

struct Tokenizer::Impl {
    UnicodeTables u;
    bool clean_text = false, chinese = false, strip_accents = false, lowercase = false;
    std::unordered_map<char32_t, std::vector<AddedToken>> added;  // by first code point, longest first
    std::unordered_map<std::string, int64_t> vocab;
    int64_t unk_id = 0;
    std::string prefix = "##";
    std::size_t max_chars = 100;
    std::vector<Template> single;
    std::size_t n_special = 0;
    int max_seq_len = 0;
    std::size_t cut_at = 0;

    void parse(const json& doc, const std::string& path);
    void normalize(const std::u32string& text, std::size_t from, std::size_t to, std::vector<NChar>& out) const;
    void word_piece(const NChar* w, std::size_t n, int32_t word, Encoding& enc) const;
    Encoding encode_prefix(const std::u32string& text, std::size_t n) const;
};

void Tokenizer::Impl::parse(const json& doc, const std::string& path) {
    if (!doc.is_object()) fail(path, "not a Hugging Face tokenizers file (expected a JSON object)");
    const json& model = doc.value("model", json());
    if (!model.is_object() || model.value("type", "") != "WordPiece")
        fail(path, "model: type " + type_of(model) + " is not supported by the C++ runtime (WordPiece only)");
    const json& norm = doc.value("normalizer", json());
    if (!norm.is_null()) {
        if (norm.value("type", "") != "BertNormalizer")
            fail(path, "normalizer: type " + type_of(norm) + " is not supported by the C++ runtime (BertNormalizer)");
        clean_text = flag(norm, "clean_text", true);
        chinese = flag(norm, "handle_chinese_chars", true);
        lowercase = flag(norm, "lowercase", true);
        strip_accents = flag(norm, "strip_accents", lowercase);  // null: follows lowercase
    }
    const json& pre = doc.value("pre_tokenizer", json());
    if (pre.is_null() || pre.value("type", "") != "BertPreTokenizer")
        fail(path, "pre_tokenizer: type " + type_of(pre) + " is not supported by the C++ runtime (BertPreTokenizer)");

    const json& vocab_json = model.value("vocab", json());
    if (!vocab_json.is_object() || vocab_json.empty()) fail(path, "model.vocab: missing or empty");
    vocab.reserve(vocab_json.size());
    for (const auto& [tok, id] : vocab_json.items()) vocab.emplace(tok, id.get<int64_t>());
    const std::string unk = model.value("unk_token", "[UNK]");
    auto unk_it = vocab.find(unk);
    if (unk_it == vocab.end()) fail(path, "model.unk_token: " + detail::py_str_repr(unk) + " is not in the vocabulary");
    unk_id = unk_it->second;
    prefix = model.value("continuing_subword_prefix", "##");
    max_chars = model.value("max_input_chars_per_word", std::size_t{100});

    for (const auto& t : doc.value("added_tokens", json::array())) {
        const std::string content = t.value("content", "");
        if (t.value("normalized", false) || t.value("single_word", false) || t.value("lstrip", false) ||
            t.value("rstrip", false))
            fail(path, "added_tokens: " + detail::py_str_repr(content) +
                           " is normalized, single_word or stripped: not supported by the C++ runtime");
        std::u32string cps;
        if (content.empty() || detail::decode_utf8(content, cps)) fail(path, "added_tokens: invalid content");
        added[cps[0]].push_back({cps, t.at("id").get<int64_t>()});
    }
    for (auto& [first, list] : added)
        std::stable_sort(list.begin(), list.end(),
                         [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });

    const json& post = doc.value("post_processor", json());
    if (post.is_null()) {
        single = {{true, {}, 0}};
    } else if (post.value("type", "") == "BertProcessing") {
        single = {{false, {post.at("cls").at(1).get<int64_t>()}, 0},
                  {true, {}, 0},
                  {false, {post.at("sep").at(1).get<int64_t>()}, 0}};
    } else if (post.value("type", "") == "TemplateProcessing") {
        const json& specials = post.value("special_tokens", json::object());
        for (const auto& piece : post.at("single")) {
            if (piece.contains("Sequence")) {
                single.push_back({true, {}, piece["Sequence"].value("type_id", int64_t{0})});
            } else if (piece.contains("SpecialToken")) {
                const std::string name = piece["SpecialToken"].value("id", "");
                auto it = specials.find(name);
                if (it == specials.end())
                    fail(path, "post_processor: special token " + detail::py_str_repr(name) + " has no ids");
                single.push_back({false, it->at("ids").get<std::vector<int64_t>>(),
                                  piece["SpecialToken"].value("type_id", int64_t{0})});
            }
        }
    } else {
        fail(path, "post_processor: type " + type_of(post) + " is not supported by the C++ runtime");
    }
    for (const auto& p : single) n_special += p.ids.size();
}

// BertNormalizer over text[from, to) (a segment between special tokens).
void Tokenizer::Impl::normalize(const std::u32string& text, std::size_t from, std::size_t to,
                                std::vector<NChar>& out) const {
    std::vector<NChar> cur;
    cur.reserve(to - from);
    for (std::size_t i = from; i < to; ++i) {
        const char32_t c = text[i];
        const uint16_t f = u.flags(c);
        if (clean_text && (f & UnicodeTables::kCleanRemoved)) continue;
        cur.push_back({(clean_text && (f & UnicodeTables::kCleanWhitespace)) ? U' ' : c, static_cast<int64_t>(i),
                       static_cast<int64_t>(i + 1)});
    }
    if (chinese) {
        std::vector<NChar> next;
        next.reserve(cur.size());
        for (const NChar& n : cur) {
            if (u.has(n.c, UnicodeTables::kChinese)) {
                next.push_back({U' ', n.start, n.end});
                next.push_back(n);
                next.push_back({U' ', n.start, n.end});
            } else {
                next.push_back(n);
            }
        }
        cur.swap(next);
    }
    if (strip_accents) {
        struct Item {
            char32_t c;
            bool inserted;
            uint8_t ccc;
        };
        std::vector<Item> items;
        items.reserve(cur.size());
        for (const NChar& n : cur) {
            if (u.has(n.c, UnicodeTables::kDecomposes)) {
                const std::u32string& d = u.nfd(n.c);
                for (std::size_t k = 0; k < d.size(); ++k) items.push_back({d[k], k > 0, u.ccc(d[k])});
            } else {
                items.push_back({n.c, false, u.ccc(n.c)});
            }
        }
        // canonical ordering: each run of non-zero classes sorted by class, stably
        for (std::size_t i = 0; i < items.size();) {
            if (items[i].ccc == 0) {
                ++i;
                continue;
            }
            std::size_t j = i;
            while (j < items.size() && items[j].ccc != 0) ++j;
            std::stable_sort(items.begin() + static_cast<std::ptrdiff_t>(i), items.begin() + static_cast<std::ptrdiff_t>(j),
                             [](const Item& a, const Item& b) { return a.ccc < b.ccc; });
            i = j;
        }
        std::vector<NChar> next;
        next.reserve(items.size());
        std::size_t consumed = 0;
        const auto seg = static_cast<int64_t>(from);
        for (const Item& it : items) {
            int64_t s, e;
            if (it.inserted) {
                s = consumed ? cur[consumed - 1].start : seg;
                e = consumed ? cur[consumed - 1].end : seg;
            } else {
                s = cur[consumed].start;
                e = cur[consumed].end;
                ++consumed;
            }
            if (!u.has(it.c, UnicodeTables::kMark)) next.push_back({it.c, s, e});
        }
        cur.swap(next);
    }
    if (lowercase) {
        std::vector<NChar> next;
        next.reserve(cur.size());
        for (const NChar& n : cur) {
            if (u.has(n.c, UnicodeTables::kLowercase)) {
                for (char32_t l : u.lower(n.c)) next.push_back({l, n.start, n.end});
            } else {
                next.push_back(n);
            }
        }
        cur.swap(next);
    }
    out.insert(out.end(), cur.begin(), cur.end());
}

// Greedy longest-match-first WordPiece on one pre-tokenizer word; an unmatchable or over-long word is
// one unknown token.
void Tokenizer::Impl::word_piece(const NChar* w, std::size_t n, int32_t word, Encoding& enc) const {
    auto push = [&](int64_t id, std::size_t a, std::size_t b) {
        enc.ids.push_back(id);
        enc.type_ids.push_back(0);
        enc.offsets.emplace_back(w[a].start, w[b - 1].end);
        enc.word_ids.push_back(word);
    };
    if (n > max_chars) {
        push(unk_id, 0, n);
        return;
    }
    std::string bytes;
    std::vector<std::size_t> pos(n + 1, 0);
    for (std::size_t i = 0; i < n; ++i) {
        pos[i] = bytes.size();
        detail::append_utf8(bytes, w[i].c);
    }
    pos[n] = bytes.size();
    const std::size_t mark = enc.ids.size();
    std::string key;
    for (std::size_t start = 0; start < n;) {
        std::size_t end = n;
        int64_t found = -1;
        for (; end > start; --end) {
            key.assign(start > 0 ? prefix : std::string());
            key.append(bytes, pos[start], pos[end] - pos[start]);
            auto it = vocab.find(key);
            if (it != vocab.end()) {
                found = it->second;
                break;
            }
        }
        if (found < 0) {  // the whole word is unknown: drop the pieces found so far
            enc.ids.resize(mark);
            enc.type_ids.resize(mark);
            enc.offsets.resize(mark);
            enc.word_ids.resize(mark);
            push(unk_id, 0, n);
            return;
        }
        push(found, start, end);
        start = end;
    }
}

// Tokens of text[0, n) before truncation is decided; stops early once the result overflows.
Encoding Tokenizer::Impl::encode_prefix(const std::u32string& text, std::size_t n) const {
    const std::size_t limit = static_cast<std::size_t>(max_seq_len) - n_special;
    Encoding raw;
    int32_t word = 0;
    std::vector<NChar> chars;
    auto plain = [&](std::size_t from, std::size_t to) {
        chars.clear();
        normalize(text, from, to, chars);
        std::size_t i = 0;
        while (i < chars.size() && raw.size() <= limit) {
            const uint16_t f = u.flags(chars[i].c);
            if (f & UnicodeTables::kSplitWhitespace) {
                ++i;
            } else if (f & UnicodeTables::kPunctuation) {
                word_piece(&chars[i], 1, word++, raw);
                ++i;
            } else {
                std::size_t j = i;
                while (j < chars.size() &&
                       !(u.flags(chars[j].c) & (UnicodeTables::kSplitWhitespace | UnicodeTables::kPunctuation)))
                    ++j;
                word_piece(&chars[i], j - i, word++, raw);
                i = j;
            }
        }
    };
    // special tokens first: leftmost-longest matches on the raw text
    std::size_t seg = 0;
    for (std::size_t i = 0; i < n && raw.size() <= limit;) {
        const AddedToken* hit = nullptr;
        if (!added.empty()) {
            auto it = added.find(text[i]);
            if (it != added.end())
                for (const AddedToken& t : it->second)
                    if (t.content.size() <= n - i && text.compare(i, t.content.size(), t.content) == 0) {
                        hit = &t;
                        break;
                    }
        }
        if (!hit) {
            ++i;
            continue;
        }
        if (i > seg) plain(seg, i);
        raw.ids.push_back(hit->id);
        raw.type_ids.push_back(0);
        raw.offsets.emplace_back(static_cast<int64_t>(i), static_cast<int64_t>(i + hit->content.size()));
        raw.word_ids.push_back(word++);
        i += hit->content.size();
        seg = i;
    }
    if (seg < n && raw.size() <= limit) plain(seg, n);

    Encoding enc;
    enc.truncated = raw.size() > limit;
    const std::size_t keep = std::min(raw.size(), limit);
    for (const Template& piece : single) {
        if (piece.sequence) {
            enc.ids.insert(enc.ids.end(), raw.ids.begin(), raw.ids.begin() + static_cast<std::ptrdiff_t>(keep));
            enc.offsets.insert(enc.offsets.end(), raw.offsets.begin(),
                               raw.offsets.begin() + static_cast<std::ptrdiff_t>(keep));
            enc.word_ids.insert(enc.word_ids.end(), raw.word_ids.begin(),
                                raw.word_ids.begin() + static_cast<std::ptrdiff_t>(keep));
            enc.type_ids.insert(enc.type_ids.end(), keep, piece.type_id);
        } else {
            for (int64_t id : piece.ids) {
                enc.ids.push_back(id);
                enc.offsets.emplace_back(0, 0);
                enc.word_ids.push_back(-1);
                enc.type_ids.push_back(piece.type_id);
            }
        }
    }
    return enc;
}

Tokenizer Tokenizer::from_files(const std::string& tokenizer_json, const std::string& tables_json, int max_seq_len) {
    auto impl = std::make_shared<Impl>();
    impl->parse(read_json(tokenizer_json), tokenizer_json);
    if (max_seq_len < static_cast<int>(impl->n_special) || max_seq_len < 2)
        throw bundle_error("manifest.json: max_seq_len: expected >= 2, got " + std::to_string(max_seq_len));
    impl->max_seq_len = max_seq_len;
    impl->cut_at = static_cast<std::size_t>(max_seq_len) * kCharsPerTokenBound;
    impl->u = detail::UnicodeTables::load(tables_json);
    return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_bundle(const std::string& bundle_dir, bool verify) {
    const detail::Bundle b = detail::load_bundle(bundle_dir, verify);
    const detail::Manifest& m = b.manifest;
    if (m.tokenizer.empty())
        throw bundle_error(b.root + "/manifest.json: tokenizer: the bundle names no tokenizer file");
    if (m.tokenizer_tables.empty()) throw bundle_error(detail::no_tables_message(b.root));
    return from_files(b.path(m.tokenizer), b.path(m.tokenizer_tables), m.max_seq_len);
}

const char* utf8_problem(std::string_view text, std::size_t* byte) {
    std::u32string ignored;
    auto bad = detail::decode_utf8(text, ignored);
    if (!bad) return nullptr;
    if (byte) *byte = bad->byte;
    return bad->reason;
}

int Tokenizer::max_seq_len() const { return impl_->max_seq_len; }

Encoding Tokenizer::encode(const std::u32string& text) const {
    const Impl& m = *impl_;
    // runtime/tokenize.py TextTokenizer._cut: a prefix ending at whitespace that still overflows
    std::size_t n = text.size();
    if (text.size() > m.cut_at) {
        const std::size_t half = m.cut_at / 2;
        for (std::size_t i = m.cut_at; i-- > half;)
            if (m.u.has(text[i], UnicodeTables::kPySpace)) {
                n = i;
                break;
            }
    }
    Encoding enc = m.encode_prefix(text, n);
    if (n < text.size()) {
        if (!enc.truncated)
            enc = m.encode_prefix(text, text.size());  // the cut text fit: the cut may have changed the result
        else
            enc.truncated = true;
    }
    return enc;
}

Encoding Tokenizer::encode(std::string_view utf8) const {
    std::u32string text;
    if (auto bad = detail::decode_utf8(utf8, text))
        throw input_error("not valid UTF-8 (" + std::string(bad->reason) + " at byte " + std::to_string(bad->byte) + ")");
    return encode(text);
}

}  // namespace mtst
