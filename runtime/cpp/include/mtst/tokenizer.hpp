// WordPiece (BERT-family) tokenization with the answers of the Hugging Face `tokenizers` library.
//
// The pipeline is the library's: special tokens split off the raw text, BertNormalizer (clean text,
// pad CJK, NFD + strip accents, lowercase), BertPreTokenizer (whitespace, punctuation), greedy WordPiece,
// truncation at max_seq_len, [CLS] A [SEP]. Per-code-point Unicode answers come from the bundle's
// tokenizer tables, which the export wrote by asking the library itself (mtst.export.tokenizer_tables);
// the vocabulary and the steps to apply come from the bundle's tokenizer.json.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mtst/error.hpp"

namespace mtst {

// One text's tokens. Offsets are code-point offsets into the text (as Python's str indexes it), end
// exclusive; special tokens have offsets (0, 0) and word id -1.
struct Encoding {
    std::vector<int64_t> ids;
    std::vector<int64_t> type_ids;
    std::vector<std::pair<int64_t, int64_t>> offsets;
    std::vector<int32_t> word_ids;
    bool truncated = false;  // the text had more than max_seq_len tokens: the tail was dropped
    std::size_t size() const { return ids.size(); }
};

// Why `text` is not valid UTF-8 ("invalid start byte", "invalid continuation byte", "unexpected end of
// data", as Python's codec says) with the offset of the bad sequence in *byte; nullptr when it is valid.
MTST_API const char* utf8_problem(std::string_view text, std::size_t* byte);

class MTST_API Tokenizer {
public:
    // tokenizer.json and the tables file (paths); Error(Bundle) names the file and field it cannot use.
    static Tokenizer from_files(const std::string& tokenizer_json, const std::string& tables_json, int max_seq_len);
    // The tokenizer of a bundle folder (manifest.json verified first, as Engine::load does).
    static Tokenizer from_bundle(const std::string& bundle_dir, bool verify = true);

    // Tokens of one UTF-8 text, truncated at max_seq_len with the Python runtime's pre-cut of very long
    // texts. Error(Input) when the text is not valid UTF-8.
    Encoding encode(std::string_view utf8) const;
    // The same for text already decoded to code points (offsets index this string).
    Encoding encode(const std::u32string& text) const;

    int max_seq_len() const;

private:
    struct Impl;
    explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
    std::shared_ptr<const Impl> impl_;
};

}  // namespace mtst
