// The WordPiece tokenizer core: BertNormalizer + BertPreTokenizer + WordPiece of huggingface
// `tokenizers`, fused into one pass over the code points of a text, with no Python in sight.
//
// For each code point, in the reference's order:
//   added tokens   a special token written in the text ("[MASK]") is matched on the raw text first
//                  (leftmost, then longest) and kept whole; the rest is normalized piece by piece
//   clean          drop NUL, U+FFFD and Cc/Cf/Co except \t \n \r; White_Space -> word break
//   chinese chars  a CJK ideograph becomes a word of its own
//   strip accents  canonical decomposition (NFD, with canonical reordering), then drop Mn
//   lowercase      full lower-case mapping (one char may become two: U+0130 -> i U+0307)
//   pre-tokenize   split on white space (removed) and punctuation (kept, one char per word)
//   WordPiece      greedy longest-match-first with "##" continuations; a word longer than
//                  max_input_chars_per_word, or with a piece that matches nothing, is one [UNK]
// Each normalized char remembers the original code point it came from, so a token's offsets are
// (first char's source, last char's source + 1) in code points of the original text, exactly as the
// reference's alignments give them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "vocab_trie.h"

namespace bertfast {

struct NormalizerOptions {
    bool lowercase = true;
    bool strip_accents = true;  // already resolved: None follows lowercase (done by the caller)
    bool handle_chinese_chars = true;
};

struct SpecialToken {
    std::u32string text;
    int32_t id;
};

// Tokens of one text, without [CLS]/[SEP]: ids and (start, end) offsets in code points.
struct TokenBuffer {
    std::vector<int32_t> ids;
    std::vector<int32_t> offsets;  // 2 per token

    void clear() {
        ids.clear();
        offsets.clear();
    }
    size_t size() const { return ids.size(); }
    void push(int32_t id, int32_t start, int32_t end) {
        ids.push_back(id);
        offsets.push_back(start);
        offsets.push_back(end);
    }
    void truncate(size_t n) {
        ids.resize(n);
        offsets.resize(2 * n);
    }
};

// Scratch space for one thread: the word being built and the pending combining marks.
struct Workspace {
    std::vector<uint8_t> bytes;      // the word, UTF-8
    std::vector<int32_t> char_byte;  // byte offset where each char of the word starts (+ sentinel)
    std::vector<int32_t> char_orig;  // source code point index of each char of the word
    int32_t nchars = 0;
    int32_t nbytes = 0;
    int32_t first_orig = 0;
    int32_t last_orig = 0;
    // Decomposed chars with a nonzero combining class wait here until canonical reordering:
    // the char, its class, its change (0: first of its decomposition, 1: inserted), and the source
    // index of every change-0 item in source order.
    std::vector<uint32_t> pend_cp;
    std::vector<uint8_t> pend_ccc;
    std::vector<uint8_t> pend_change;
    std::vector<int32_t> pend_src;
    int32_t last_src = 0;  // source index of the last char consumed by the decomposition
    // Set when the text holds a lone surrogate: its code point index.
    int64_t bad_index = -1;
};

class WordPieceModel {
public:
    // `vocab[i]` is the token with id i. Special tokens are matched in the raw text.
    WordPieceModel(const std::vector<std::string>& vocab, int32_t unk_id, NormalizerOptions options,
                   std::vector<SpecialToken> specials, int32_t max_input_chars_per_word,
                   const std::string& continuing_prefix);

    // Appends the tokens of `text` (n code units of a Python str: Latin-1, UCS-2 or UCS-4) to `out`.
    // Returns false, with ws.bad_index set, if the text holds a lone surrogate.
    template <class CharT>
    bool encode(const CharT* text, size_t n, Workspace& ws, TokenBuffer& out) const;

    void prepare(Workspace& ws) const;  // sizes a fresh workspace for this model

    const VocabTrie& trie() const { return trie_; }
    int32_t unk_id() const { return unk_id_; }
    int32_t max_input_chars_per_word() const { return max_chars_; }

private:
    friend class TextEncoder;

    // Length of the special token matched at text[i], or 0; its id in *id.
    template <class CharT>
    size_t match_special(const CharT* text, size_t n, size_t i, int32_t* id) const;

    VocabTrie trie_;
    int32_t cont_root_ = VocabTrie::kNone;  // state after the continuing prefix ("##")
    int32_t unk_id_;
    NormalizerOptions opt_;
    int32_t max_chars_;
    std::vector<SpecialToken> specials_;  // longest first
    bool special_first_ascii_[128] = {};
    std::vector<uint32_t> special_first_other_;
    uint8_t ascii_class_[128] = {};
    uint8_t ascii_map_[128] = {};  // lower-cased when lowercasing
};

}  // namespace bertfast
