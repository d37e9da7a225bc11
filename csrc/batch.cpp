// Batch encoding (see batch.h).
#include "batch.h"

#include <algorithm>
#include <atomic>
#include <new>
#include <thread>

namespace bertfast {

void run_workers(int threads, void (*fn)(void*, int), void* ctx) {
    if (threads <= 1) {
        fn(ctx, 0);
        return;
    }
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (int t = 1; t < threads; ++t) pool.emplace_back(fn, ctx, t);
    fn(ctx, 0);
    for (auto& th : pool) th.join();
}

int choose_threads(size_t items, size_t units, int requested) {
    // Starting a thread costs tens of microseconds: below ~16k code points (a few hundred short
    // sentences' worth of work) one thread is faster.
    constexpr size_t kUnitsPerThread = 16384;
    constexpr size_t kItemsPerThread = 8;
    int hw = static_cast<int>(std::thread::hardware_concurrency());
    if (hw <= 0) hw = 1;
    int t = requested > 0 ? requested : std::min(hw, 16);
    t = static_cast<int>(std::min<size_t>(t, std::max<size_t>(1, units / kUnitsPerThread)));
    t = static_cast<int>(std::min<size_t>(t, std::max<size_t>(1, items / kItemsPerThread)));
    return std::max(t, 1);
}

namespace {

// (keep1, keep2) for sequences of n1 and n2 tokens (n2 < 0: no pair), as tokenizers truncates them.
// Returns false when the strategy cannot reach the length (only_first / only_second).
bool truncate_lengths(int64_t n1, int64_t n2, const PostOptions& opt, int64_t* keep1, int64_t* keep2,
                      std::string* error) {
    const bool pair = n2 >= 0;
    int64_t k1 = n1, k2 = pair ? n2 : 0;
    *keep1 = k1;
    *keep2 = k2;
    if (opt.truncation == Truncation::kNone) return true;
    const int64_t added = opt.add_special_tokens ? (pair ? 3 : 2) : 0;
    // tokenizers subtracts the added tokens in usize: a max_length below them wraps around and
    // truncates nothing.
    if (opt.max_length < added) return true;
    const int64_t max_len = opt.max_length - added;
    if (max_len == 0) {
        *keep1 = 0;
        *keep2 = 0;
        return true;
    }
    const int64_t total = k1 + k2;
    if (total <= max_len) return true;
    const int64_t to_remove = total - max_len;
    if (opt.truncation == Truncation::kLongestFirst) {
        if (!pair) {
            *keep1 = max_len;
            return true;
        }
        // The shorter side keeps what it has when the longer one can absorb the cut; else split
        // max_len in two halves, the odd token going to the longer side.
        int64_t a = k1, b = k2;
        const bool swap = a > b;
        if (swap) std::swap(a, b);
        b = a > max_len ? a : std::max(a, max_len - a);
        if (a + b > max_len) {
            a = max_len / 2;
            b = a + max_len % 2;
        }
        if (swap) std::swap(a, b);
        *keep1 = std::min(k1, a);
        *keep2 = std::min(k2, b);
        return true;
    }
    const bool first = opt.truncation == Truncation::kOnlyFirst;
    if (!first && !pair) {
        *error = "Truncation error: Second sequence not provided";
        return false;
    }
    const int64_t target = first ? k1 : k2;
    if (target <= to_remove) {
        *error = "Truncation error: Sequence to truncate too short to respect the provided max_length";
        return false;
    }
    (first ? *keep1 : *keep2) = target - to_remove;
    return true;
}

}  // namespace

// Shared by the workers of one tokenize() call; each worker w writes only workers_[w].
struct BatchEncoder::TokenizeJob {
    const WordPieceModel* model;
    const std::vector<TextRef>* items;
    BatchEncoder* enc;
    std::atomic<size_t> next{0};      // the first item no worker has taken yet
    std::atomic<bool> failed{false};  // a worker ran out of memory (nothing may escape a std::thread)
};

void BatchEncoder::tokenize_worker(void* ctx, int w) {
    auto& job = *static_cast<TokenizeJob*>(ctx);
    Worker& me = job.enc->workers_[w];
    Loc* locs = job.enc->locs_.data();
    TokenBuffer& out = me.tokens;
    try {
        constexpr size_t kChunk = 16;
        const size_t n = job.items->size();
        for (;;) {
            const size_t start = job.next.fetch_add(kChunk, std::memory_order_relaxed);
            if (start >= n) break;
            const size_t stop = std::min(n, start + kChunk);
            for (size_t i = start; i < stop; ++i) {
                const TextRef& t = (*job.items)[i];
                const size_t begin = out.size();
                bool ok;
                if (t.kind == 1)
                    ok = job.model->encode(static_cast<const uint8_t*>(t.data), t.length, me.ws, out);
                else if (t.kind == 2)
                    ok = job.model->encode(static_cast<const uint16_t*>(t.data), t.length, me.ws, out);
                else
                    ok = job.model->encode(static_cast<const uint32_t*>(t.data), t.length, me.ws, out);
                if (!ok) {
                    if (me.bad_item < 0) {
                        me.bad_item = static_cast<int64_t>(i);
                        me.bad_index = me.ws.bad_index;
                    }
                    out.truncate(begin);
                }
                locs[i] = Loc{w, static_cast<int32_t>(out.size() - begin), begin};
            }
        }
    } catch (...) {
        job.failed = true;
        job.next = job.items->size();  // the other workers stop at their next chunk
    }
}

bool BatchEncoder::tokenize(const WordPieceModel& model, const std::vector<TextRef>& items, int threads) {
    threads = std::max(threads, 1);
    workers_.resize(threads);  // kept between calls: a reused encoder allocates nothing for short texts
    locs_.assign(items.size(), Loc{0, 0, 0});
    bad_item_ = bad_index_ = -1;

    size_t units = 0;
    for (const auto& it : items) units += it.length;
    const size_t per_thread = units / threads + 64;
    for (Worker& wk : workers_) {
        wk.tokens.clear();
        wk.tokens.ids.reserve(per_thread / 3);
        wk.tokens.offsets.reserve(2 * (per_thread / 3));
        wk.bad_item = wk.bad_index = -1;
    }

    TokenizeJob job;
    job.model = &model;
    job.items = &items;
    job.enc = this;
    run_workers(threads, tokenize_worker, &job);
    if (job.failed) throw std::bad_alloc();

    for (int w = 0; w < threads; ++w) {  // report the first bad text, whichever worker saw it
        const Worker& wk = workers_[w];
        if (wk.bad_item >= 0 && (bad_item_ < 0 || wk.bad_item < bad_item_)) {
            bad_item_ = wk.bad_item;
            bad_index_ = wk.bad_index;
        }
    }
    return bad_item_ < 0;
}

bool BatchEncoder::plan(size_t rows, bool pairs, const PostOptions& opt) {
    rows_ = rows;
    pairs_ = pairs;
    opt_ = opt;
    keep1_.resize(rows);
    keep2_.resize(rows);
    row_len_.resize(rows);
    max_len_ = 0;
    total_ = 0;
    const int64_t added = opt.add_special_tokens ? (pairs ? 3 : 2) : 0;
    for (size_t r = 0; r < rows; ++r) {
        const int64_t n1 = locs_[r].len;
        const int64_t n2 = pairs ? locs_[rows + r].len : -1;
        int64_t k1, k2;
        if (!truncate_lengths(n1, n2, opt, &k1, &k2, &error_)) return false;
        keep1_[r] = static_cast<int32_t>(k1);
        keep2_[r] = static_cast<int32_t>(k2);
        row_len_[r] = k1 + k2 + added;
        max_len_ = std::max(max_len_, row_len_[r]);
        total_ += row_len_[r];
    }
    // pad_encodings: the target is the longest row or the fixed length, rounded up to the multiple;
    // a row longer than a fixed target is left as it is.
    int64_t target = 0;
    if (opt.padding == Padding::kLongest) target = max_len_;
    if (opt.padding == Padding::kFixed) target = opt.pad_length;
    if (opt.padding != Padding::kNone && opt.pad_multiple > 0 && target % opt.pad_multiple != 0)
        target += opt.pad_multiple - target % opt.pad_multiple;
    // Rows shorter than the target are padded to it; the result is rectangular when every row ends
    // up with the same length (always so for kLongest).
    pad_target_ = target;
    padded_len_ = rows ? std::max(row_len_[0], target) : 0;
    for (size_t r = 1; r < rows; ++r) {
        if (std::max(row_len_[r], target) != padded_len_) {
            padded_len_ = -1;
            break;
        }
    }
    return true;
}

void BatchEncoder::write_row(size_t r, int64_t* ids, int64_t* type_ids, int64_t* mask, int64_t* offsets,
                             int64_t width) const {
    const bool special = opt_.add_special_tokens;
    int64_t p = 0;
    auto put_special = [&](int32_t id, int64_t type) {
        ids[p] = id;
        if (type_ids) type_ids[p] = type;
        if (mask) mask[p] = 1;
        if (offsets) offsets[2 * p] = offsets[2 * p + 1] = 0;
        ++p;
    };
    auto put_seq = [&](const Loc& loc, int32_t keep, int64_t type) {
        const TokenBuffer& a = workers_[loc.worker].tokens;
        const int32_t* src = a.ids.data() + loc.begin;
        for (int32_t k = 0; k < keep; ++k) ids[p + k] = src[k];
        if (type_ids) std::fill(type_ids + p, type_ids + p + keep, type);
        if (mask) std::fill(mask + p, mask + p + keep, int64_t{1});
        if (offsets) {
            const int32_t* off = a.offsets.data() + 2 * loc.begin;
            for (int32_t k = 0; k < 2 * keep; ++k) offsets[2 * p + k] = off[k];
        }
        p += keep;
    };
    if (special) put_special(opt_.cls_id, 0);
    put_seq(locs_[r], keep1_[r], 0);
    if (special) put_special(opt_.sep_id, 0);
    if (pairs_) {
        put_seq(locs_[rows_ + r], keep2_[r], 1);
        if (special) put_special(opt_.sep_id, 1);
    }
    if (p < width) {
        std::fill(ids + p, ids + width, int64_t{opt_.pad_id});
        if (type_ids) std::fill(type_ids + p, type_ids + width, int64_t{0});
        if (mask) std::fill(mask + p, mask + width, int64_t{0});
        if (offsets) std::fill(offsets + 2 * p, offsets + 2 * width, int64_t{0});
    }
}

void BatchEncoder::fill_padded(size_t r0, size_t r1, int64_t stride, const OutputArrays& out) const {
    for (size_t r = r0; r < r1; ++r) {
        const int64_t base = static_cast<int64_t>(r) * stride;
        write_row(r, out.ids + base, out.type_ids ? out.type_ids + base : nullptr, out.mask ? out.mask + base : nullptr,
                  out.offsets ? out.offsets + 2 * base : nullptr, stride);
    }
}

void BatchEncoder::fill_flat(size_t r0, size_t r1, const int64_t* starts, int64_t pad_to,
                             const OutputArrays& out) const {
    for (size_t r = r0; r < r1; ++r) {
        const int64_t base = starts[r];
        const int64_t width = std::max(row_len_[r], pad_to);
        write_row(r, out.ids + base, out.type_ids ? out.type_ids + base : nullptr, out.mask ? out.mask + base : nullptr,
                  out.offsets ? out.offsets + 2 * base : nullptr, width);
    }
}

}  // namespace bertfast
