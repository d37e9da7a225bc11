// Batch encoding: tokenize many texts on several threads, then truncate, add [CLS]/[SEP] and pad
// exactly as huggingface `tokenizers` post-processes an encoding (TemplateProcessing for BERT,
// truncate_encodings, pad_encodings), writing straight into caller-owned int64 arrays.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "wordpiece.h"

namespace bertfast {

// A borrowed Python str: its code units (1, 2 or 4 bytes wide) and length in code points.
struct TextRef {
    const void* data = nullptr;
    size_t length = 0;
    int kind = 1;
};

enum class Truncation : int { kNone = 0, kLongestFirst = 1, kOnlyFirst = 2, kOnlySecond = 3 };
enum class Padding : int { kNone = 0, kLongest = 1, kFixed = 2 };

struct PostOptions {
    bool add_special_tokens = true;
    int32_t cls_id = 101;
    int32_t sep_id = 102;
    int32_t pad_id = 0;
    Truncation truncation = Truncation::kNone;
    int64_t max_length = 0;  // truncation length, specials included
    Padding padding = Padding::kNone;
    int64_t pad_length = 0;    // for Padding::kFixed
    int64_t pad_multiple = 0;  // 0: none
};

// Output arrays: ids, type ids, mask: one int64 each per token; offsets: two int64 per token (or null).
struct OutputArrays {
    int64_t* ids = nullptr;
    int64_t* type_ids = nullptr;
    int64_t* mask = nullptr;
    int64_t* offsets = nullptr;
};

// Runs fn(worker) on `threads` threads (the calling thread is worker 0) and joins them.
void run_workers(int threads, void (*fn)(void*, int), void* ctx);

// Threads to use for `items` texts of `units` code points in all, given a requested count (0: auto).
int choose_threads(size_t items, size_t units, int requested);

// One encoder serves one call at a time; reusing it (as the single-text path does) keeps its buffers'
// capacity, so a call on short texts allocates nothing.
class BatchEncoder {
public:
    // Tokenizes items[i] for all i (the texts, then the pairs if any). Returns false if an item holds a
    // lone surrogate; bad_item()/bad_index() say where.
    bool tokenize(const WordPieceModel& model, const std::vector<TextRef>& items, int threads);

    // Truncation and row lengths for `rows` rows (items r and rows + r when `pairs`). Returns false,
    // with error() set, when the reference would refuse (only_first/only_second too short).
    bool plan(size_t rows, bool pairs, const PostOptions& opt);

    // After plan(): the length of row r before padding, the longest, and the padded length
    // (the one every row ends up with, or -1 when the rows stay ragged: unpadded rows of different
    // lengths, or fixed padding shorter than some rows).
    int64_t row_length(size_t r) const { return row_len_[r]; }
    int64_t max_row_length() const { return max_len_; }
    int64_t padded_length() const { return padded_len_; }
    int64_t pad_target() const { return pad_target_; }  // the length padding aims at (0: no padding)
    int64_t total_tokens() const { return total_; }

    // Writes rows [r0, r1). Padded: row r starts at r * stride; flat: row r starts at starts[r].
    void fill_padded(size_t r0, size_t r1, int64_t stride, const OutputArrays& out) const;
    void fill_flat(size_t r0, size_t r1, const int64_t* starts, int64_t pad_to, const OutputArrays& out) const;

    int64_t bad_item() const { return bad_item_; }
    int64_t bad_index() const { return bad_index_; }
    const std::string& error() const { return error_; }

private:
    // Where item i's tokens are: in workers_[worker].tokens, `len` tokens from `begin`.
    struct Loc {
        int32_t worker;
        int32_t len;
        size_t begin;
    };
    // What one worker thread owns: the tokens of the items it took, its scratch space, and the first
    // of its items with a lone surrogate (-1: none) with the surrogate's index.
    struct Worker {
        TokenBuffer tokens;
        Workspace ws;  // sized by the first encode() that gets it
        int64_t bad_item = -1, bad_index = -1;
    };
    struct TokenizeJob;
    static void tokenize_worker(void* job, int w);
    void write_row(size_t r, int64_t* ids, int64_t* type_ids, int64_t* mask, int64_t* offsets, int64_t width) const;

    std::vector<Worker> workers_;
    std::vector<Loc> locs_;
    std::vector<int32_t> keep1_, keep2_;  // tokens kept per row after truncation
    std::vector<int64_t> row_len_;
    size_t rows_ = 0;
    bool pairs_ = false;
    PostOptions opt_;
    int64_t max_len_ = 0, padded_len_ = 0, pad_target_ = 0, total_ = 0;
    int64_t bad_item_ = -1, bad_index_ = -1;
    std::string error_;
};

}  // namespace bertfast
