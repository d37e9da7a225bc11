"""Generate csrc/unicode_tables.h: the per-code-point tables the C++ WordPiece tokenizer needs.

    python scripts/gen_unicode_tables.py                    # regenerate csrc/unicode_tables.h
    python scripts/gen_unicode_tables.py --check            # fail if the committed header is stale
    python scripts/gen_unicode_tables.py --check-reference  # compare the tables with `tokenizers`

Source: Python's `unicodedata` at Unicode PINNED_UNICODE_VERSION (Python 3.11 ships 14.0.0). The
script refuses to run on another version, so the header is reproducible byte for byte.

What the tokenizer needs per code point (the BertNormalizer + BertPreTokenizer of `tokenizers`):
  DROP   removed by clean_text: NUL, U+FFFD, and "other" (Cc, Cf, Co) except \\t \\n \\r
  WS     White_Space (Rust's char::is_whitespace; PropList.txt, unchanged since Unicode 6.3)
  PUNCT  ASCII punctuation or general category P*
  CJK    the "Chinese character" ranges of BertNormalizer (spaces are put around them)
  MN     general category Mn (dropped after NFD when accents are stripped)
  SURR   a surrogate: Python can hold a lone one, UTF-8 cannot
plus the canonical combining class, the full canonical decomposition (NFD; Hangul syllables are
decomposed algorithmically in C++, not stored) and the full lower-case mapping (str.lower() of the
single character, which is Rust's char::to_lowercase: SpecialCasing's unconditional mappings
included, e.g. U+0130 -> "i" U+0307; no context-dependent final sigma).

Where `tokenizers` 0.23.3 knowingly behaves by older or newer Unicode data than 14.0, the tables
follow the reference, and every such code point is listed below in REFERENCE_COMPAT with the reason
(`--check-reference` re-derives the differences from an installed `tokenizers`):
  * its general categories come from the `unicode_categories` crate (Unicode 8.0 data), so marks,
    punctuation and format characters added in Unicode 9.0-14.0 are not Mn / P* / Cf to it, and two
    characters keep their 8.0 category (U+166D was Po, U+1734 was Mn, U+111C9 was Po);
  * that crate has no Cn table: unassigned code points are kept, not cleaned away;
  * its NFD (`unicode-normalization-alignments`) predates Unicode 13.0: U+11938 does not decompose,
    and 98 marks have combining class 0 to it (never reordered);
  * its lower-casing is Rust's std (Unicode 16.0/17.0): 55 capitals unassigned in 14.0 have lower-case
    mappings there; they are added here.
"""

from __future__ import annotations

import argparse
import string
import sys
import unicodedata
from pathlib import Path

PINNED_UNICODE_VERSION = "14.0.0"
HEADER = Path(__file__).resolve().parent.parent / "csrc" / "unicode_tables.h"
MAX_CP = 0x110000
BLOCK = 128  # code points per second-stage block

FLAG_DROP = 1
FLAG_WS = 2
FLAG_PUNCT = 4
FLAG_CJK = 8
FLAG_MN = 16
FLAG_SURR = 32

# Rust's char::is_whitespace == the White_Space property (PropList.txt).
WHITE_SPACE = [
    *range(0x09, 0x0E),
    0x20,
    0x85,
    0xA0,
    0x1680,
    *range(0x2000, 0x200B),
    0x2028,
    0x2029,
    0x202F,
    0x205F,
    0x3000,
]

# BertNormalizer's is_chinese_char (tokenizers/src/normalizers/bert.rs): inclusive ranges.
CJK_RANGES = [
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
]


def _ranges(*items):
    """Expand ints and inclusive (lo, hi) pairs into a sorted list of code points."""
    out = []
    for it in items:
        if isinstance(it, tuple):
            out.extend(range(it[0], it[1] + 1))
        else:
            out.append(it)
    return sorted(out)


# Where tokenizers 0.23.3 differs from Unicode 14.0 (see the module docstring). Derived once with
# --check-reference against tokenizers 0.23.3 and written out here so generation needs no reference.
REFERENCE_COMPAT = {
    # Cf in 14.0, unknown (so not "other") to Unicode 8.0 data: kept by clean_text.
    "not_other": _ranges(0x890, 0x891, 0x8E2, 0x110CD, (0x13430, 0x13438)),
    # P* in 14.0, unknown to Unicode 8.0 data: not split off as punctuation.
    "not_punct": _ranges(
        0x61D,
        0x9FD,
        0xA76,
        0xC77,
        0xC84,
        0x1B7D,
        0x1B7E,
        (0x2E43, 0x2E4F),
        (0x2E52, 0x2E5D),
        0x10EAD,
        (0x10F55, 0x10F59),
        (0x10F86, 0x10F89),
        (0x1144B, 0x1144F),
        0x1145A,
        0x1145B,
        0x1145D,
        (0x11660, 0x1166C),
        0x116B9,
        0x1183B,
        (0x11944, 0x11946),
        0x119E2,
        (0x11A3F, 0x11A46),
        (0x11A9A, 0x11A9C),
        (0x11A9E, 0x11AA2),
        (0x11C41, 0x11C45),
        0x11C70,
        0x11C71,
        0x11EF7,
        0x11EF8,
        0x11FFF,
        0x12FF1,
        0x12FF2,
        (0x16E97, 0x16E9A),
        0x16FE2,
        0x1E95E,
        0x1E95F,
    ),
    # Po in Unicode 8.0 (So / Mn in 14.0): split off as punctuation by the reference.
    "extra_punct": [0x166D, 0x111C9],
    # Mn in 14.0, unknown to Unicode 8.0 data: kept when accents are stripped.
    "not_mn": _ranges(
        0x7FD,
        (0x898, 0x89F),
        (0x8CA, 0x8E1),
        0x9FE,
        (0xAFA, 0xAFF),
        0xB55,
        0xC04,
        0xC3C,
        0xD00,
        (0xD3B, 0xD3C),
        0xD81,
        0xEBA,
        0x180F,
        (0x1885, 0x1886),
        (0x1ABF, 0x1ACE),
        (0x1DF6, 0x1DFB),
        0xA82C,
        0xA8C5,
        0xA8FF,
        0xA9BD,
        (0x10D24, 0x10D27),
        (0x10EAB, 0x10EAC),
        (0x10F46, 0x10F50),
        (0x10F82, 0x10F85),
        0x11070,
        (0x11073, 0x11074),
        0x110C2,
        0x111C9,
        0x111CF,
        0x1123E,
        0x1133B,
        (0x11438, 0x1143F),
        (0x11442, 0x11444),
        0x11446,
        0x1145E,
        (0x1182F, 0x11837),
        (0x11839, 0x1183A),
        (0x1193B, 0x1193C),
        0x1193E,
        0x11943,
        (0x119D4, 0x119D7),
        (0x119DA, 0x119DB),
        0x119E0,
        (0x11A01, 0x11A0A),
        (0x11A33, 0x11A38),
        (0x11A3B, 0x11A3E),
        0x11A47,
        (0x11A51, 0x11A56),
        (0x11A59, 0x11A5B),
        (0x11A8A, 0x11A96),
        (0x11A98, 0x11A99),
        (0x11C30, 0x11C36),
        (0x11C38, 0x11C3D),
        0x11C3F,
        (0x11C92, 0x11CA7),
        (0x11CAA, 0x11CB0),
        (0x11CB2, 0x11CB3),
        (0x11CB5, 0x11CB6),
        (0x11D31, 0x11D36),
        0x11D3A,
        (0x11D3C, 0x11D3D),
        (0x11D3F, 0x11D45),
        0x11D47,
        (0x11D90, 0x11D91),
        0x11D95,
        0x11D97,
        (0x11EF3, 0x11EF4),
        0x16F4F,
        0x16FE4,
        (0x1CF00, 0x1CF2D),
        (0x1CF30, 0x1CF46),
        (0x1E000, 0x1E006),
        (0x1E008, 0x1E018),
        (0x1E01B, 0x1E021),
        (0x1E023, 0x1E024),
        (0x1E026, 0x1E02A),
        (0x1E130, 0x1E136),
        0x1E2AE,
        (0x1E2EC, 0x1E2EF),
        (0x1E944, 0x1E94A),
    ),
    # Mn in Unicode 8.0 (Mc since 14.0): dropped when accents are stripped.
    "extra_mn": [0x1734],
    # Canonical decomposition added in Unicode 13.0, unknown to the reference's NFD.
    "no_nfd": [0x11938],
    # Marks with a nonzero combining class in 14.0 that the reference's NFD does not reorder
    # (class 0 to it: added after its Unicode data, or Mc it never classed).
    "ccc_zero": _ranges(
        0x7FD,
        (0x898, 0x89F),
        (0x8CA, 0x8D3),
        0x9FE,
        0xC3C,
        (0xD3B, 0xD3C),
        0xEBA,
        0x1715,
        (0x1ABF, 0x1ACE),
        (0x1DF6, 0x1DFA),
        0xA82C,
        (0x10D24, 0x10D27),
        (0x10EAB, 0x10EAC),
        (0x10F46, 0x10F50),
        (0x10F82, 0x10F85),
        0x11070,
        0x1133B,
        0x1145E,
        (0x11839, 0x1183A),
        (0x1193D, 0x1193E),
        0x11943,
        0x119E0,
        0x11A34,
        0x11A47,
        0x11A99,
        0x11D42,
        (0x11D44, 0x11D45),
        0x11D97,
        (0x16FF0, 0x16FF1),
        (0x1E130, 0x1E136),
        0x1E2AE,
        (0x1E2EC, 0x1E2EF),
    ),
    # Lower-case mappings of Rust's std (Unicode 16.0 / 17.0) for code points unassigned in 14.0.
    "extra_lower": {
        0x1C89: 0x1C8A,
        0xA7CB: 0x0264,
        0xA7CC: 0xA7CD,
        0xA7CE: 0xA7CF,
        0xA7D2: 0xA7D3,
        0xA7D4: 0xA7D5,
        0xA7DA: 0xA7DB,
        0xA7DC: 0x019B,
        **{cp: cp + 0x20 for cp in range(0x10D50, 0x10D66)},
        **{cp: cp + 0x1B for cp in range(0x16EA0, 0x16EB9)},
    },
}


def char_properties():
    """Per code point: (flags, ccc, nfd tuple, lower tuple), following the reference where it differs."""
    not_other = set(REFERENCE_COMPAT["not_other"])
    not_punct = set(REFERENCE_COMPAT["not_punct"])
    extra_punct = set(REFERENCE_COMPAT["extra_punct"])
    not_mn = set(REFERENCE_COMPAT["not_mn"])
    extra_mn = set(REFERENCE_COMPAT["extra_mn"])
    no_nfd = set(REFERENCE_COMPAT["no_nfd"])
    ccc_zero = set(REFERENCE_COMPAT["ccc_zero"])
    extra_lower = REFERENCE_COMPAT["extra_lower"]
    white_space = set(WHITE_SPACE)
    ascii_punct = {ord(c) for c in string.punctuation}

    props = []
    for cp in range(MAX_CP):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        flags = 0
        if cat == "Cs":
            props.append((FLAG_SURR, 0, (), ()))
            continue
        is_other = cat in ("Cc", "Cf", "Co") and cp not in not_other
        if cp in (0, 0xFFFD) or (is_other and cp not in (0x09, 0x0A, 0x0D)):
            flags |= FLAG_DROP
        if cp in white_space:
            flags |= FLAG_WS
        if (cat.startswith("P") and cp not in not_punct) or cp in ascii_punct or cp in extra_punct:
            flags |= FLAG_PUNCT
        if any(lo <= cp <= hi for lo, hi in CJK_RANGES):
            flags |= FLAG_CJK
        if (cat == "Mn" and cp not in not_mn) or cp in extra_mn:
            flags |= FLAG_MN
        ccc = 0 if cp in ccc_zero else unicodedata.combining(ch)
        nfd = ()
        if not (0xAC00 <= cp <= 0xD7A3) and cp not in no_nfd:  # Hangul: algorithmic, in C++
            d = unicodedata.normalize("NFD", ch)
            if d != ch:
                nfd = tuple(ord(c) for c in d)
        low = ch.lower()
        lower = tuple(ord(c) for c in low) if low != ch else ()
        if cp in extra_lower:
            assert cat == "Cn" and not lower, hex(cp)
            lower = (extra_lower[cp],)
        props.append((flags, ccc, nfd, lower))
    return props


def build_tables(props):
    data = [0]  # sequence storage (NFD and lower-case); offset 0 is never used by a real record
    seq_index = {}

    def intern(seq):
        if not seq:
            return 0
        if seq not in seq_index:
            seq_index[seq] = len(data)
            data.extend(seq)
        return seq_index[seq]

    records = [(0, 0, 0, 0, 0, 0)]  # record 0: nothing special
    record_index = {records[0]: 0}
    per_cp = []
    for flags, ccc, nfd, lower in props:
        rec = (flags, ccc, len(nfd), len(lower), intern(nfd), intern(lower))
        if rec not in record_index:
            record_index[rec] = len(records)
            records.append(rec)
        per_cp.append(record_index[rec])
    assert len(records) < 1 << 16 and len(data) < 1 << 16

    stage1, blocks, block_index = [], [], {}
    for start in range(0, MAX_CP, BLOCK):
        blk = tuple(per_cp[start : start + BLOCK])
        if blk not in block_index:
            block_index[blk] = len(blocks)
            blocks.append(blk)
        stage1.append(block_index[blk])
    return records, data, stage1, blocks


def _c_array(ctype, name, values, per_line=16, fmt="{}"):
    lines = [f"inline constexpr {ctype} {name}[{len(values)}] = {{"]
    for i in range(0, len(values), per_line):
        lines.append("    " + ", ".join(fmt.format(v) for v in values[i : i + per_line]) + ",")
    lines.append("};")
    return "\n".join(lines)


def render_header():
    props = char_properties()
    records, data, stage1, blocks = build_tables(props)
    stage2 = [r for blk in blocks for r in blk]
    rec_lines = [f"inline constexpr CharRecord kRecords[{len(records)}] = {{"]
    for flags, ccc, nlen, llen, noff, loff in records:
        rec_lines.append(f"    {{{flags}, {ccc}, {nlen}, {llen}, {noff}, {loff}}},")
    rec_lines.append("};")
    parts = [
        "// Generated by scripts/gen_unicode_tables.py -- do not edit by hand.",
        f"// Source: Python unicodedata, Unicode {unicodedata.unidata_version}, plus the documented",
        "// REFERENCE_COMPAT overrides that match huggingface tokenizers 0.23.3 (see the script).",
        "#pragma once",
        "",
        "#include <cstdint>",
        "",
        "namespace bertfast::unicode {",
        "",
        f'inline constexpr const char* kUnicodeVersion = "{unicodedata.unidata_version}";',
        f"inline constexpr uint32_t kBlockShift = {BLOCK.bit_length() - 1};",
        f"inline constexpr uint32_t kBlockMask = {BLOCK - 1};",
        "",
        f"inline constexpr uint8_t kDrop = {FLAG_DROP};   // removed by clean_text",
        f"inline constexpr uint8_t kSpace = {FLAG_WS};  // White_Space",
        f"inline constexpr uint8_t kPunct = {FLAG_PUNCT};  // ASCII punctuation or P*",
        f"inline constexpr uint8_t kCjk = {FLAG_CJK};    // BertNormalizer's Chinese character ranges",
        f"inline constexpr uint8_t kMn = {FLAG_MN};    // nonspacing mark",
        f"inline constexpr uint8_t kSurrogate = {FLAG_SURR};",
        "",
        "struct CharRecord {",
        "    uint8_t flags;",
        "    uint8_t ccc;        // canonical combining class",
        "    uint8_t nfd_len;    // length of the canonical decomposition in kSeqData (0: none)",
        "    uint8_t lower_len;  // length of the lower-case mapping in kSeqData (0: maps to itself)",
        "    uint16_t nfd_off;",
        "    uint16_t lower_off;",
        "};",
        "",
        "\n".join(rec_lines),
        "",
        _c_array("uint32_t", "kSeqData", data, fmt="0x{:X}"),
        "",
        "// record index = kStage2[(kStage1[cp >> kBlockShift] << kBlockShift) + (cp & kBlockMask)]",
        _c_array("uint16_t", "kStage1", stage1, per_line=24),
        "",
        _c_array("uint16_t", "kStage2", stage2, per_line=24),
        "",
        "inline const CharRecord& lookup(uint32_t cp) {",
        "    if (cp >= 0x110000) return kRecords[0];",
        "    return kRecords[kStage2[(uint32_t(kStage1[cp >> kBlockShift]) << kBlockShift) + (cp & kBlockMask)]];",
        "}",
        "",
        "}  // namespace bertfast::unicode",
        "",
    ]
    return "\n".join(parts)


def check_reference():
    """Compare the tables with the installed `tokenizers` (the reference); print every difference."""
    import tokenizers
    from tokenizers import NormalizedString, normalizers, pre_tokenizers

    props = char_properties()
    print(f"tokenizers {tokenizers.__version__}, unicodedata {unicodedata.unidata_version}")
    clean = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False
    )
    strip = normalizers.BertNormalizer(
        clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False
    )
    lower = normalizers.BertNormalizer(
        clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=True
    )
    pre = pre_tokenizers.BertPreTokenizer()
    bad = 0
    for cp in range(MAX_CP):
        flags, _, nfd, low = props[cp]
        if flags & FLAG_SURR:
            continue
        ch = chr(cp)
        got = clean.normalize_str("a" + ch + "b")
        want = "ab" if flags & FLAG_DROP else ("a b" if flags & FLAG_WS else "a" + ch + "b")
        if 0xAC00 <= cp <= 0xD7A3:  # the C++ side decomposes Hangul syllables algorithmically
            nfd = tuple(ord(c) for c in unicodedata.normalize("NFD", ch))
        ours_strip = "".join(chr(c) for c in (nfd or (cp,)) if not props[c][0] & FLAG_MN)
        ours_lower = "".join(chr(c) for c in (low or (cp,)))
        is_punct = len(pre.pre_tokenize_str("a" + ch + "a")) == 3
        checks = [
            ("clean", got, want),
            ("strip", strip.normalize_str(ch), ours_strip),
            ("lower", lower.normalize_str(ch), ours_lower),
            ("punct", is_punct, bool(flags & FLAG_PUNCT) and not flags & FLAG_WS),
        ]
        for what, ref, ours in checks:
            if ref != ours:
                bad += 1
                print(f"U+{cp:04X} {what}: reference {ref!r}, tables {ours!r}")
    # Combining classes: does the reference's NFD move the mark in front of one it should precede?
    for cp in range(MAX_CP):
        ch = chr(cp)
        py_ccc = 0 if props[cp][0] & FLAG_SURR else unicodedata.combining(ch)
        if py_ccc == 0:
            continue
        # Put it after a class-230 mark (or before a class-1 one): it moves there iff its class is nonzero.
        dec = "".join(chr(c) for c in props[cp][2]) or ch
        unmoved = "x\u0301" + dec if py_ccc < 230 else "x" + dec + "\u0334"
        moved = unicodedata.normalize("NFD", unmoved)
        if moved == unmoved:
            continue
        ns = NormalizedString(unmoved)
        ns.nfd()
        ref_zero = ns.normalized == unmoved
        if ref_zero != (props[cp][1] == 0):
            bad += 1
            print(f"U+{cp:04X} combining class: reference {'0' if ref_zero else 'nonzero'}, tables {props[cp][1]}")
    print(f"{bad} differences")
    return bad


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the committed header differs")
    ap.add_argument("--check-reference", action="store_true", help="compare with the installed tokenizers")
    args = ap.parse_args(argv)
    if unicodedata.unidata_version != PINNED_UNICODE_VERSION:
        sys.exit(
            f"unicodedata is Unicode {unicodedata.unidata_version}; the tables are pinned to "
            f"{PINNED_UNICODE_VERSION} (run with Python 3.11)"
        )
    if args.check_reference:
        sys.exit(1 if check_reference() else 0)
    text = render_header()
    if args.check:
        current = HEADER.read_text() if HEADER.exists() else ""
        if current != text:
            sys.exit(f"{HEADER} is stale: rerun scripts/gen_unicode_tables.py")
        print(f"{HEADER} is up to date")
        return
    HEADER.write_text(text)
    print(f"wrote {HEADER} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
