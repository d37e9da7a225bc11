// A double-array trie over UTF-8 bytes: the vocabulary lookup of the WordPiece tokenizer.
//
// One transition is two loads from one 12-byte cell: child = cell[s].base + byte, valid when
// cell[child].check == s. A cell's `value` is the token id of the string spelled by the path from
// the root to it, or -1. Greedy longest-match-first WordPiece walks the trie once per piece and keeps
// the last cell with a value, instead of hashing every candidate substring.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bertfast {

class VocabTrie {
public:
    static constexpr int32_t kNone = -1;

    VocabTrie() = default;

    // Builds the trie from (key, id) pairs. A key given twice keeps the later id, as a dict would.
    void build(const std::vector<std::string>& keys, const std::vector<int32_t>& ids);

    int32_t root() const { return 0; }

    // The state reached from `state` by `byte`, or kNone.
    int32_t next(int32_t state, uint8_t byte) const {
        const uint32_t child = static_cast<uint32_t>(cells_[state].base) + byte;
        if (child < cells_.size() && cells_[child].check == state) return static_cast<int32_t>(child);
        return kNone;
    }

    // The state reached from `state` by a whole string, or kNone.
    int32_t walk(int32_t state, const std::string& s) const {
        for (unsigned char b : s) {
            if (state == kNone) break;
            state = next(state, b);
        }
        return state;
    }

    // Token id at `state`, or kNone.
    int32_t value(int32_t state) const { return cells_[state].value; }

    // Token id of a whole string, or kNone.
    int32_t find(const std::string& s) const {
        const int32_t st = walk(root(), s);
        return st == kNone ? kNone : value(st);
    }

    size_t num_cells() const { return cells_.size(); }

private:
    struct Cell {
        int32_t base = 0;
        int32_t check = kNone;
        int32_t value = kNone;
    };
    std::vector<Cell> cells_;
};

}  // namespace bertfast
