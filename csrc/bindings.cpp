// pybind11 bindings: bertfast._wordpiece.WordPieceCore, the engine behind bertfast.Tokenizer.
//
// Texts are read in place from the Python str objects (their 1-, 2- or 4-byte code units), so
// offsets come out in code points with no UTF-8 round trip. Batches are tokenized and written with
// the GIL released, on several threads, straight into numpy arrays; no Python object is made per
// token except where the caller asked for Python lists.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "batch.h"
#include "unicode_tables.h"
#include "wordpiece.h"

namespace py = pybind11;

namespace bertfast {
namespace {

const char* type_name(PyObject* o) { return Py_TYPE(o)->tp_name; }

// A borrowed view of a str, or a TypeError naming the argument.
TextRef text_ref(PyObject* o, const std::string& what) {
    if (!PyUnicode_Check(o))
        throw py::type_error(what + " must be a str, got " + type_name(o));
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(o) != 0) throw py::error_already_set();
#endif
    TextRef t;
    t.kind = static_cast<int>(PyUnicode_KIND(o));
    t.data = PyUnicode_DATA(o);
    t.length = static_cast<size_t>(PyUnicode_GET_LENGTH(o));
    return t;
}

[[noreturn]] void throw_surrogate(const std::string& what, PyObject* text, int64_t index) {
    const Py_UCS4 c = index >= 0 ? PyUnicode_ReadChar(text, index) : 0;
    char hex[16];
    snprintf(hex, sizeof hex, "U+%04X", static_cast<unsigned>(c));
    throw py::value_error(what + " holds a lone surrogate (" + hex + " at index " + std::to_string(index) +
                          "), which UTF-8 cannot encode; the reference tokenizer refuses it too. "
                          "Clean the text first, e.g. text.encode('utf-8', 'replace').decode('utf-8').");
}

PostOptions make_options(bool add_special_tokens, int32_t cls_id, int32_t sep_id, int32_t pad_id, int truncation,
                         int64_t max_length, int padding, int64_t pad_length, int64_t pad_multiple) {
    PostOptions o;
    o.add_special_tokens = add_special_tokens;
    o.cls_id = cls_id;
    o.sep_id = sep_id;
    o.pad_id = pad_id;
    o.truncation = static_cast<Truncation>(truncation);
    o.max_length = max_length;
    o.padding = static_cast<Padding>(padding);
    o.pad_length = pad_length;
    o.pad_multiple = pad_multiple;
    return o;
}

// n int64 values as a Python list of ints.
py::object int_list(const int64_t* v, int64_t n) {
    PyObject* list = PyList_New(n);
    if (!list) throw py::error_already_set();
    for (int64_t i = 0; i < n; ++i) PyList_SET_ITEM(list, i, PyLong_FromLongLong(v[i]));
    return py::reinterpret_steal<py::object>(list);
}

// n (start, end) pairs, laid out flat, as a Python list of 2-tuples.
py::object offset_list(const int64_t* v, int64_t n) {
    PyObject* list = PyList_New(n);
    if (!list) throw py::error_already_set();
    for (int64_t i = 0; i < n; ++i) {
        PyObject* tup = PyTuple_New(2);
        PyTuple_SET_ITEM(tup, 0, PyLong_FromLongLong(v[2 * i]));
        PyTuple_SET_ITEM(tup, 1, PyLong_FromLongLong(v[2 * i + 1]));
        PyList_SET_ITEM(list, i, tup);
    }
    return py::reinterpret_steal<py::object>(list);
}

// Rows of a flat int64 array as Python lists: row r is values[cu[r]:cu[r+1]]; with `pairs`, the
// array is [T, 2] and each element is a (start, end) tuple. For return_tensors=None.
py::list split_rows(py::array_t<int64_t, py::array::c_style | py::array::forcecast> values,
                    py::array_t<int64_t, py::array::c_style | py::array::forcecast> cu, bool pairs) {
    const int64_t* v = values.data();
    const int64_t* c = cu.data();
    const py::ssize_t rows = cu.size() - 1;
    const int64_t total = values.size() / (pairs ? 2 : 1);
    py::list out(std::max<py::ssize_t>(rows, 0));
    for (py::ssize_t r = 0; r < rows; ++r) {
        const int64_t a = c[r], b = c[r + 1];
        if (a < 0 || b < a || b > total) throw py::value_error("split_rows: bad row bounds");
        PyObject* list = PyList_New(b - a);
        if (!list) throw py::error_already_set();
        for (int64_t i = a; i < b; ++i) {
            PyObject* item;
            if (pairs) {
                item = PyTuple_New(2);
                PyTuple_SET_ITEM(item, 0, PyLong_FromLongLong(v[2 * i]));
                PyTuple_SET_ITEM(item, 1, PyLong_FromLongLong(v[2 * i + 1]));
            } else {
                item = PyLong_FromLongLong(v[i]);
            }
            PyList_SET_ITEM(list, i - a, item);
        }
        PyList_SET_ITEM(out.ptr(), r, list);
    }
    return out;
}

class WordPieceCore {
public:
    WordPieceCore(const std::vector<std::string>& vocab, int32_t unk_id, bool lowercase, bool strip_accents,
                  bool handle_chinese_chars, const std::vector<std::pair<std::u32string, int32_t>>& specials,
                  int32_t max_input_chars_per_word, const std::string& continuing_prefix)
        : model_(vocab, unk_id, NormalizerOptions{lowercase, strip_accents, handle_chinese_chars},
                 to_specials(specials), max_input_chars_per_word, continuing_prefix) {}

    // Token ids and offsets of one text, without special tokens: (ids, offsets) as lists.
    py::tuple tokenize(py::handle text) {
        PostOptions opt;
        opt.add_special_tokens = false;
        const OutputArrays row = encode_one(text, py::none(), opt, true);
        const int64_t n = single_.padded_length();
        return py::make_tuple(int_list(row.ids, n), offset_list(row.offsets, n));
    }

    // One text (and optional pair) to Python lists: (ids, type_ids, mask, offsets or None).
    py::tuple encode_single(py::handle text, py::handle pair, bool add_special_tokens, int32_t cls_id, int32_t sep_id,
                            int32_t pad_id, int truncation, int64_t max_length, int padding, int64_t pad_length,
                            int64_t pad_multiple, bool with_offsets) {
        const PostOptions opt = make_options(add_special_tokens, cls_id, sep_id, pad_id, truncation, max_length,
                                             padding, pad_length, pad_multiple);
        const OutputArrays row = encode_one(text, pair, opt, with_offsets);
        const int64_t n = single_.padded_length();
        return py::make_tuple(int_list(row.ids, n), int_list(row.type_ids, n), int_list(row.mask, n),
                              with_offsets ? offset_list(row.offsets, n) : py::object(py::none()));
    }

    // A batch to numpy arrays. Returns a dict: input_ids, token_type_ids, attention_mask (when
    // with_mask), offset_mapping (when with_offsets); 2-D [B, L] when every row has the same padded
    // length and `flat` is false, else flat [T] with cu_seqlens (int32, B + 1) and max_seqlen.
    py::dict encode_batch(py::handle texts, py::handle pairs, bool add_special_tokens, int32_t cls_id, int32_t sep_id,
                          int32_t pad_id, int truncation, int64_t max_length, int padding, int64_t pad_length,
                          int64_t pad_multiple, bool with_offsets, bool with_mask, bool flat, int num_threads) {
        const PostOptions opt = make_options(add_special_tokens, cls_id, sep_id, pad_id, truncation, max_length,
                                             padding, pad_length, pad_multiple);
        // Own references to every str (a tuple copy), so that no text can go away while the GIL is
        // released, even if the caller's list is changed by another thread meanwhile.
        py::tuple ta = py::reinterpret_steal<py::tuple>(PySequence_Tuple(texts.ptr()));
        if (!ta) throw py::error_already_set();
        const bool has_pair = !pairs.is_none();
        py::tuple tb;
        if (has_pair) {
            tb = py::reinterpret_steal<py::tuple>(PySequence_Tuple(pairs.ptr()));
            if (!tb) throw py::error_already_set();
            if (tb.size() != ta.size())
                throw py::value_error("batch length of `text` (" + std::to_string(ta.size()) +
                                      ") does not match batch length of `text_pair` (" + std::to_string(tb.size()) +
                                      ")");
        }
        const size_t rows = ta.size();
        std::vector<TextRef> items;
        items.reserve(has_pair ? 2 * rows : rows);
        size_t units = 0;
        for (size_t i = 0; i < rows; ++i) {
            items.push_back(text_ref(PyTuple_GET_ITEM(ta.ptr(), i), "text[" + std::to_string(i) + "]"));
            units += items.back().length;
        }
        if (has_pair) {
            for (size_t i = 0; i < rows; ++i) {
                items.push_back(text_ref(PyTuple_GET_ITEM(tb.ptr(), i), "text_pair[" + std::to_string(i) + "]"));
                units += items.back().length;
            }
        }

        BatchEncoder enc;
        const int threads = choose_threads(items.size(), units, num_threads);
        bool ok, planned = false;
        {
            py::gil_scoped_release nogil;
            ok = enc.tokenize(model_, items, threads);
            if (ok) planned = enc.plan(rows, has_pair, opt);
        }
        if (!ok) {
            const int64_t bad = enc.bad_item();
            const bool second = bad >= static_cast<int64_t>(rows);
            const int64_t row = second ? bad - static_cast<int64_t>(rows) : bad;
            throw_surrogate(std::string(second ? "text_pair[" : "text[") + std::to_string(row) + "]",
                            PyTuple_GET_ITEM(second ? tb.ptr() : ta.ptr(), row), enc.bad_index());
        }
        if (!planned) throw py::value_error(enc.error());

        py::dict result;
        const bool rect = !flat && enc.padded_length() >= 0;
        OutputArrays out;
        std::vector<int64_t> starts;
        int64_t pad_to = 0;
        if (rect) {
            const py::ssize_t B = static_cast<py::ssize_t>(rows), L = enc.padded_length();
            py::array_t<int64_t> ids({B, L}), types({B, L});
            out.ids = ids.mutable_data();
            out.type_ids = types.mutable_data();
            result["input_ids"] = ids;
            result["token_type_ids"] = types;
            if (with_mask) {
                py::array_t<int64_t> mask({B, L});
                out.mask = mask.mutable_data();
                result["attention_mask"] = mask;
            }
            if (with_offsets) {
                py::array_t<int64_t> offs({B, L, py::ssize_t{2}});
                out.offsets = offs.mutable_data();
                result["offset_mapping"] = offs;
            }
        } else {
            // Flat rows; a fixed padding target shorter than some rows pads the others only.
            if (!flat) pad_to = enc.pad_target();
            starts.resize(rows + 1);
            py::array_t<int32_t> cu(static_cast<py::ssize_t>(rows + 1));
            int32_t* cu_ptr = cu.mutable_data();
            int64_t total = 0, longest = 0;
            for (size_t r = 0; r < rows; ++r) {
                starts[r] = total;
                cu_ptr[r] = static_cast<int32_t>(total);
                const int64_t len = std::max(enc.row_length(r), pad_to);
                longest = std::max(longest, len);
                total += len;
            }
            if (total > INT32_MAX)
                throw py::value_error("the batch has " + std::to_string(total) +
                                      " tokens; cu_seqlens is int32: split it into smaller batches");
            starts[rows] = total;
            cu_ptr[rows] = static_cast<int32_t>(total);
            const py::ssize_t T = static_cast<py::ssize_t>(total);
            py::array_t<int64_t> ids(T), types(T);
            out.ids = ids.mutable_data();
            out.type_ids = types.mutable_data();
            result["input_ids"] = ids;
            result["token_type_ids"] = types;
            if (with_mask) {
                py::array_t<int64_t> mask(T);
                out.mask = mask.mutable_data();
                result["attention_mask"] = mask;
            }
            if (with_offsets) {
                py::array_t<int64_t> offs({T, py::ssize_t{2}});
                out.offsets = offs.mutable_data();
                result["offset_mapping"] = offs;
            }
            result["cu_seqlens"] = cu;
            result["max_seqlen"] = py::int_(longest);
        }

        {
            py::gil_scoped_release nogil;
            struct FillJob {
                const BatchEncoder* enc;
                const OutputArrays* out;
                const std::vector<int64_t>* starts;
                bool rect;
                int64_t stride, pad_to;
                size_t rows;
                int parts;
            } job{&enc, &out, &starts, rect, rect ? enc.padded_length() : 0, pad_to, rows, 1};
            const int64_t cells = rect ? static_cast<int64_t>(rows) * enc.padded_length() : enc.total_tokens();
            job.parts = std::min<int>(threads, static_cast<int>(std::max<int64_t>(1, cells / 65536)));
            auto fill = [](void* ctx, int w) {
                auto& j = *static_cast<FillJob*>(ctx);
                const size_t r0 = j.rows * w / j.parts, r1 = j.rows * (w + 1) / j.parts;
                if (j.rect)
                    j.enc->fill_padded(r0, r1, j.stride, *j.out);
                else
                    j.enc->fill_flat(r0, r1, j.starts->data(), j.pad_to, *j.out);
            };
            run_workers(job.parts, fill, &job);
        }
        return result;
    }

    int32_t unk_id() const { return model_.unk_id(); }
    size_t trie_cells() const { return model_.trie().num_cells(); }

private:
    // One text (and optional pair) as a batch of one through the batch encoder, on this thread and
    // with the GIL held, so that the layout ([CLS]/[SEP], truncation, padding) has one implementation.
    // Returns the row, written into row_ (valid until the next call); its length is
    // single_.padded_length().
    OutputArrays encode_one(py::handle text, py::handle pair, const PostOptions& opt, bool with_offsets) {
        const bool has_pair = !pair.is_none();
        single_items_.clear();
        single_items_.push_back(text_ref(text.ptr(), "text"));
        if (has_pair) single_items_.push_back(text_ref(pair.ptr(), "text_pair"));
        if (!single_.tokenize(model_, single_items_, 1)) {
            const bool second = single_.bad_item() == 1;
            throw_surrogate(second ? "text_pair" : "text", second ? pair.ptr() : text.ptr(), single_.bad_index());
        }
        if (!single_.plan(1, has_pair, opt)) throw py::value_error(single_.error());
        const int64_t width = single_.padded_length();  // one row: always rectangular

        row_.resize(static_cast<size_t>(5 * width));  // ids, type ids, mask: width each; offsets: 2 * width
        OutputArrays row;
        row.ids = row_.data();
        row.type_ids = row.ids + width;
        row.mask = row.type_ids + width;
        row.offsets = with_offsets ? row.mask + width : nullptr;
        single_.fill_padded(0, 1, width, row);
        return row;
    }

    static std::vector<SpecialToken> to_specials(const std::vector<std::pair<std::u32string, int32_t>>& s) {
        std::vector<SpecialToken> out;
        for (const auto& [text, id] : s) out.push_back(SpecialToken{text, id});
        return out;
    }

    WordPieceModel model_;
    // The single-text path's encoder and buffers, kept between calls so that a call allocates
    // nothing. It runs with the GIL held, so never concurrently (encode_batch has its own, per call).
    BatchEncoder single_;
    std::vector<TextRef> single_items_;
    std::vector<int64_t> row_;
};

}  // namespace
}  // namespace bertfast

PYBIND11_MODULE(_wordpiece, m) {
    using bertfast::WordPieceCore;
    m.doc() = "bertfast's C++ WordPiece tokenizer (BertNormalizer + BertPreTokenizer + WordPiece).";
    m.attr("UNICODE_VERSION") = bertfast::unicode::kUnicodeVersion;
    m.def("split_rows", &bertfast::split_rows, py::arg("values"), py::arg("cu"), py::arg("pairs") = false);
    py::class_<WordPieceCore>(m, "WordPieceCore")
        .def(py::init<const std::vector<std::string>&, int32_t, bool, bool, bool,
                      const std::vector<std::pair<std::u32string, int32_t>>&, int32_t, const std::string&>(),
             py::arg("vocab"), py::arg("unk_id"), py::arg("lowercase"), py::arg("strip_accents"),
             py::arg("handle_chinese_chars"), py::arg("specials"), py::arg("max_input_chars_per_word") = 100,
             py::arg("continuing_prefix") = "##")
        .def("tokenize", &WordPieceCore::tokenize, py::arg("text"))
        .def("encode_single", &WordPieceCore::encode_single)
        .def("encode_batch", &WordPieceCore::encode_batch)
        .def_property_readonly("unk_id", &WordPieceCore::unk_id)
        .def_property_readonly("trie_cells", &WordPieceCore::trie_cells);
}
