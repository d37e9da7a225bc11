// WordPiece tokenizer core (see wordpiece.h for the pipeline).
#include "wordpiece.h"

#include <algorithm>
#include <stdexcept>

#include "unicode_tables.h"

namespace bertfast {

namespace {

namespace uc = bertfast::unicode;

enum AsciiClass : uint8_t { kAsciiDrop = 0, kAsciiSpace = 1, kAsciiPunct = 2, kAsciiWord = 3 };

// Hangul syllables decompose algorithmically (Unicode 3.12).
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

inline int utf8_encode(uint32_t cp, uint8_t* out) {
    if (cp < 0x80) {
        out[0] = static_cast<uint8_t>(cp);
        return 1;
    }
    if (cp < 0x800) {
        out[0] = static_cast<uint8_t>(0xC0 | (cp >> 6));
        out[1] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = static_cast<uint8_t>(0xE0 | (cp >> 12));
        out[1] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
        out[2] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = static_cast<uint8_t>(0xF0 | (cp >> 18));
    out[1] = static_cast<uint8_t>(0x80 | ((cp >> 12) & 0x3F));
    out[2] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
    out[3] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
    return 4;
}

}  // namespace

// The per-text pipeline. Stages call forward: clean -> decompose -> filter Mn -> lowercase -> split.
class TextEncoder {
public:
    TextEncoder(const WordPieceModel& m, Workspace& ws, TokenBuffer& out) : m_(m), w_(ws), out_(out) {
        w_.nchars = 0;
        w_.nbytes = 0;
        w_.pend_cp.clear();
        w_.pend_ccc.clear();
        w_.pend_change.clear();
        w_.pend_src.clear();
        w_.last_src = 0;
        w_.bad_index = -1;
    }

    // An ASCII code point at `orig` (never part of a decomposition; combining class 0).
    inline void ascii(uint32_t c, int32_t orig) {
        switch (m_.ascii_class_[c]) {
            case kAsciiDrop:
                return;  // removed before NFD: does not end a run of combining marks
            case kAsciiSpace:
                if (!w_.pend_cp.empty()) flush_pending();
                end_word();
                return;
            case kAsciiPunct:
                if (!w_.pend_cp.empty()) flush_pending();
                end_word();
                append(c, orig);
                end_word();
                return;
            default:
                if (!w_.pend_cp.empty()) flush_pending();
                append(m_.ascii_map_[c], orig);
                return;
        }
    }

    // Any other code point.
    void other(uint32_t c, int32_t orig) {
        const uc::CharRecord& r = uc::lookup(c);
        if (r.flags & (uc::kDrop | uc::kSurrogate)) {
            if (r.flags & uc::kSurrogate) w_.bad_index = orig;
            return;
        }
        if (r.flags & uc::kSpace) {
            if (!w_.pend_cp.empty()) flush_pending();
            end_word();
            return;
        }
        if ((r.flags & uc::kCjk) && m_.opt_.handle_chinese_chars) {
            if (!w_.pend_cp.empty()) flush_pending();
            end_word();
            decompose(c, r, orig);
            if (!w_.pend_cp.empty()) flush_pending();
            end_word();
            return;
        }
        decompose(c, r, orig);
    }

    // End of a piece of text (before a special token or at the end).
    void finish() {
        if (!w_.pend_cp.empty()) flush_pending();
        end_word();
    }

    void emit(int32_t id, int32_t start, int32_t end) { out_.push(id, start, end); }

private:
    // NFD. Every item of a decomposition carries the reference's "change": 0 for the first (it
    // replaces its source char), 1 for the others (inserted after it).
    void decompose(uint32_t c, const uc::CharRecord& r, int32_t orig) {
        if (!m_.opt_.strip_accents) {
            lower(c, r, orig);
            return;
        }
        if (c - kSBase < kSCount) {  // Hangul syllable: L V (T), all combining class 0, never Mn
            const uint32_t s = c - kSBase;
            const uint32_t l = kLBase + s / kNCount, v = kVBase + (s % kNCount) / kTCount, t = kTBase + s % kTCount;
            if (!w_.pend_cp.empty()) flush_pending();
            w_.last_src = orig;
            lower(l, uc::lookup(l), orig);
            lower(v, uc::lookup(v), orig);
            if (t != kTBase) lower(t, uc::lookup(t), orig);
            return;
        }
        if (r.nfd_len == 0) {
            ordered(c, r, orig, 0);
            return;
        }
        for (int k = 0; k < r.nfd_len; ++k) {
            const uint32_t d = uc::kSeqData[r.nfd_off + k];
            ordered(d, uc::lookup(d), orig, k == 0 ? 0 : 1);
        }
    }

    // Canonical ordering: marks with a nonzero combining class wait for the next starter.
    inline void ordered(uint32_t c, const uc::CharRecord& r, int32_t orig, uint8_t change) {
        if (r.ccc == 0) {
            if (!w_.pend_cp.empty()) flush_pending();
            if (change == 0) w_.last_src = orig;
            filter(c, r, change == 0 ? orig : w_.last_src);
        } else {
            w_.pend_cp.push_back(c);
            w_.pend_ccc.push_back(r.ccc);
            w_.pend_change.push_back(change);
            if (change == 0) w_.pend_src.push_back(orig);
        }
    }

    // Stable sort of the waiting marks by combining class. As in the reference, a mark's "change"
    // moves with it and alignments are then handed out in order: a change-0 item takes the next
    // source char, an inserted one the source char taken last.
    void flush_pending() {
        Workspace& w = w_;
        const size_t n = w.pend_cp.size();
        for (size_t i = 1; i < n; ++i) {
            const uint32_t c = w.pend_cp[i];
            const uint8_t k = w.pend_ccc[i], ch = w.pend_change[i];
            size_t j = i;
            while (j > 0 && w.pend_ccc[j - 1] > k) {
                w.pend_cp[j] = w.pend_cp[j - 1];
                w.pend_ccc[j] = w.pend_ccc[j - 1];
                w.pend_change[j] = w.pend_change[j - 1];
                --j;
            }
            w.pend_cp[j] = c;
            w.pend_ccc[j] = k;
            w.pend_change[j] = ch;
        }
        size_t next_src = 0;
        for (size_t i = 0; i < n; ++i) {
            if (w.pend_change[i] == 0) w.last_src = w.pend_src[next_src++];
            filter(w.pend_cp[i], uc::lookup(w.pend_cp[i]), w.last_src);
        }
        w.pend_cp.clear();
        w.pend_ccc.clear();
        w.pend_change.clear();
        w.pend_src.clear();
    }

    inline void filter(uint32_t c, const uc::CharRecord& r, int32_t orig) {
        if (r.flags & uc::kMn) return;
        lower(c, r, orig);
    }

    inline void lower(uint32_t c, const uc::CharRecord& r, int32_t orig) {
        if (m_.opt_.lowercase && r.lower_len) {
            for (int k = 0; k < r.lower_len; ++k) {
                const uint32_t l = uc::kSeqData[r.lower_off + k];
                split(l, uc::lookup(l), orig);
            }
            return;
        }
        split(c, r, orig);
    }

    inline void split(uint32_t c, const uc::CharRecord& r, int32_t orig) {
        if (r.flags & uc::kSpace) {
            end_word();
        } else if (r.flags & uc::kPunct) {
            end_word();
            append(c, orig);
            end_word();
        } else {
            append(c, orig);
        }
    }

    inline void append(uint32_t c, int32_t orig) {
        Workspace& w = w_;
        if (w.nchars == 0) w.first_orig = orig;
        w.last_orig = orig;
        if (w.nchars < m_.max_chars_) {
            w.char_byte[w.nchars] = w.nbytes;
            w.char_orig[w.nchars] = orig;
            if (c < 0x80)
                w.bytes[w.nbytes++] = static_cast<uint8_t>(c);
            else
                w.nbytes += utf8_encode(c, &w.bytes[w.nbytes]);
        }
        ++w.nchars;
    }

    void end_word() {
        Workspace& w = w_;
        if (w.nchars == 0) return;
        if (w.nchars > m_.max_chars_) {
            emit(m_.unk_id_, w.first_orig, w.last_orig + 1);
        } else {
            wordpiece();
        }
        w.nchars = 0;
        w.nbytes = 0;
    }

    // Greedy longest-match-first over the word's bytes; one trie walk per piece.
    void wordpiece() {
        Workspace& w = w_;
        const VocabTrie& trie = m_.trie_;
        const size_t mark = out_.size();
        const uint8_t* bytes = w.bytes.data();
        const int32_t nbytes = w.nbytes;
        w.char_byte[w.nchars] = nbytes;
        int32_t pos = 0, k = 0;
        while (pos < nbytes) {
            int32_t s = pos == 0 ? trie.root() : m_.cont_root_;
            int32_t best = -1, best_end = 0;
            if (s != VocabTrie::kNone) {
                for (int32_t b = pos; b < nbytes; ++b) {
                    s = trie.next(s, bytes[b]);
                    if (s == VocabTrie::kNone) break;
                    const int32_t v = trie.value(s);
                    if (v >= 0) {
                        best = v;
                        best_end = b + 1;
                    }
                }
            }
            if (best < 0) {
                out_.truncate(mark);
                emit(m_.unk_id_, w.first_orig, w.last_orig + 1);
                return;
            }
            int32_t k2 = k + 1;
            while (w.char_byte[k2] < best_end) ++k2;
            emit(best, w.char_orig[k], w.char_orig[k2 - 1] + 1);
            pos = best_end;
            k = k2;
        }
    }

    const WordPieceModel& m_;
    Workspace& w_;
    TokenBuffer& out_;
};

WordPieceModel::WordPieceModel(const std::vector<std::string>& vocab, int32_t unk_id, NormalizerOptions options,
                               std::vector<SpecialToken> specials, int32_t max_input_chars_per_word,
                               const std::string& continuing_prefix)
    : unk_id_(unk_id), opt_(options), max_chars_(max_input_chars_per_word), specials_(std::move(specials)) {
    if (max_chars_ < 1) throw std::invalid_argument("max_input_chars_per_word must be >= 1");
    std::vector<int32_t> ids(vocab.size());
    for (size_t i = 0; i < vocab.size(); ++i) ids[i] = static_cast<int32_t>(i);
    trie_.build(vocab, ids);
    cont_root_ = trie_.walk(trie_.root(), continuing_prefix);

    std::stable_sort(specials_.begin(), specials_.end(),
                     [](const SpecialToken& a, const SpecialToken& b) { return a.text.size() > b.text.size(); });
    specials_.erase(std::remove_if(specials_.begin(), specials_.end(),
                                   [](const SpecialToken& s) { return s.text.empty(); }),
                    specials_.end());
    for (const auto& s : specials_) {
        const uint32_t c = s.text[0];
        if (c < 128)
            special_first_ascii_[c] = true;
        else if (std::find(special_first_other_.begin(), special_first_other_.end(), c) == special_first_other_.end())
            special_first_other_.push_back(c);
    }

    for (uint32_t c = 0; c < 128; ++c) {
        const uc::CharRecord& r = uc::lookup(c);
        if (r.flags & uc::kDrop)
            ascii_class_[c] = kAsciiDrop;
        else if (r.flags & uc::kSpace)
            ascii_class_[c] = kAsciiSpace;
        else if (r.flags & uc::kPunct)
            ascii_class_[c] = kAsciiPunct;
        else
            ascii_class_[c] = kAsciiWord;
        ascii_map_[c] = static_cast<uint8_t>((opt_.lowercase && c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
}

void WordPieceModel::prepare(Workspace& ws) const {
    ws.bytes.assign(4 * static_cast<size_t>(max_chars_) + 8, 0);
    ws.char_byte.assign(static_cast<size_t>(max_chars_) + 2, 0);
    ws.char_orig.assign(static_cast<size_t>(max_chars_) + 2, 0);
}

template <class CharT>
size_t WordPieceModel::match_special(const CharT* text, size_t n, size_t i, int32_t* id) const {
    for (const auto& s : specials_) {
        const size_t len = s.text.size();
        if (static_cast<uint32_t>(text[i]) != s.text[0] || i + len > n) continue;
        size_t k = 1;
        while (k < len && static_cast<uint32_t>(text[i + k]) == s.text[k]) ++k;
        if (k == len) {
            *id = s.id;
            return len;
        }
    }
    return 0;
}

template <class CharT>
bool WordPieceModel::encode(const CharT* text, size_t n, Workspace& ws, TokenBuffer& out) const {
    if (ws.bytes.empty()) prepare(ws);
    TextEncoder enc(*this, ws, out);
    const bool any_special = !specials_.empty();
    const bool other_special = !special_first_other_.empty();
    for (size_t i = 0; i < n; ++i) {
        const uint32_t c = text[i];
        if (any_special && ((c < 128 && special_first_ascii_[c]) ||
                            (c >= 128 && other_special &&
                             std::find(special_first_other_.begin(), special_first_other_.end(), c) !=
                                 special_first_other_.end()))) {
            int32_t id;
            const size_t len = match_special(text, n, i, &id);
            if (len) {
                enc.finish();
                enc.emit(id, static_cast<int32_t>(i), static_cast<int32_t>(i + len));
                i += len - 1;
                continue;
            }
        }
        if (c < 128) {
            enc.ascii(c, static_cast<int32_t>(i));
        } else {
            enc.other(c, static_cast<int32_t>(i));
            if (ws.bad_index >= 0) return false;
        }
    }
    enc.finish();
    return true;
}

template bool WordPieceModel::encode<uint8_t>(const uint8_t*, size_t, Workspace&, TokenBuffer&) const;
template bool WordPieceModel::encode<uint16_t>(const uint16_t*, size_t, Workspace&, TokenBuffer&) const;
template bool WordPieceModel::encode<uint32_t>(const uint32_t*, size_t, Workspace&, TokenBuffer&) const;

}  // namespace bertfast
