// Double-array trie construction (see vocab_trie.h).
#include "vocab_trie.h"

#include <algorithm>
#include <deque>
#include <utility>

namespace bertfast {

namespace {

// A plain pointer trie, used only while building: children sorted by byte.
struct BuildNode {
    std::vector<std::pair<uint8_t, int32_t>> children;
    int32_t value = VocabTrie::kNone;
};

int32_t find_or_add_child(std::vector<BuildNode>& nodes, int32_t parent, uint8_t byte) {
    auto& ch = nodes[parent].children;
    auto it = std::lower_bound(ch.begin(), ch.end(), byte,
                               [](const std::pair<uint8_t, int32_t>& e, uint8_t b) { return e.first < b; });
    if (it != ch.end() && it->first == byte) return it->second;
    const int32_t id = static_cast<int32_t>(nodes.size());
    ch.insert(it, {byte, id});  // may reallocate `ch` only, never `nodes`
    nodes.emplace_back();
    return id;
}

}  // namespace

void VocabTrie::build(const std::vector<std::string>& keys, const std::vector<int32_t>& ids) {
    std::vector<BuildNode> nodes(1);
    size_t total_bytes = 0;
    for (const auto& k : keys) total_bytes += k.size();
    nodes.reserve(total_bytes + 1);
    for (size_t i = 0; i < keys.size(); ++i) {
        int32_t n = 0;
        for (unsigned char b : keys[i]) n = find_or_add_child(nodes, n, b);
        nodes[n].value = ids[i];
    }

    // Place nodes breadth first. `free_next` finds the first unused cell at or after an index
    // (union-find with path halving), so a base is found without rescanning the full cells.
    cells_.assign(256 + nodes.size() + 1, Cell{});
    std::vector<uint8_t> used(cells_.size(), 0);
    std::vector<uint32_t> free_next(cells_.size());
    for (size_t i = 0; i < free_next.size(); ++i) free_next[i] = static_cast<uint32_t>(i);
    auto grow = [&](size_t n) {
        if (n > cells_.size()) {
            const size_t old = cells_.size();
            const size_t sz = std::max(n, old * 3 / 2);
            cells_.resize(sz, Cell{});
            used.resize(sz, 0);
            free_next.resize(sz + 1);
            for (size_t i = old; i <= sz; ++i) free_next[i] = static_cast<uint32_t>(i);
        }
    };
    auto find_free = [&](size_t i) {
        grow(i + 257);
        while (free_next[i] != i) {
            free_next[i] = free_next[free_next[i]];
            i = free_next[i];
            grow(i + 257);
        }
        return i;
    };
    auto take = [&](size_t i) {
        used[i] = 1;
        free_next[i] = static_cast<uint32_t>(i + 1);
    };
    take(0);
    cells_[0].value = nodes[0].value;

    std::deque<std::pair<int32_t, int32_t>> queue;  // (build node, cell)
    queue.emplace_back(0, 0);
    while (!queue.empty()) {
        const auto [node, cell] = queue.front();
        queue.pop_front();
        const auto& ch = nodes[node].children;
        if (ch.empty()) continue;
        // Smallest base >= 1 such that every child cell is free: the first child goes to a free cell.
        size_t p = find_free(static_cast<size_t>(ch[0].first) + 1);
        size_t base;
        for (;;) {
            base = p - ch[0].first;
            grow(base + 257);
            bool ok = true;
            for (const auto& [b, child] : ch) {
                if (used[base + b]) {
                    ok = false;
                    break;
                }
            }
            if (ok) break;
            p = find_free(p + 1);
        }
        cells_[cell].base = static_cast<int32_t>(base);
        for (const auto& [b, child] : ch) {
            const size_t c = base + b;
            take(c);
            cells_[c].check = cell;
            cells_[c].value = nodes[child].value;
            queue.emplace_back(child, static_cast<int32_t>(c));
        }
    }
    // Trim the unused tail (next() checks bounds).
    size_t last = 0;
    for (size_t i = 0; i < used.size(); ++i)
        if (used[i]) last = i;
    cells_.resize(last + 1);
    cells_.shrink_to_fit();
}

}  // namespace bertfast
