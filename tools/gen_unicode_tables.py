"""Write runtimes/cpp/unicode_tables.h: the per-character behaviour of Hugging Face tokenizers'
BertNormalizer and BertPreTokenizer, read off the installed `tokenizers` itself.

Each code point is run through the library's own normalizer and pre-tokenizer one stage at a
time, so the C++ WordPiece tokenizer (runtimes/cpp/wordpiece.h) follows that implementation and
its Unicode versions exactly, not a re-derivation of the rules. They are a mix: case mapping
from Rust's standard library (newer than Python 3.11's Unicode 14: 55 code points lowercase
differently), categories from an older crate (13 format characters Python counts as Cf are
kept). A table from Python's `unicodedata` would be wrong on those 68.

    python tools/gen_unicode_tables.py            # rewrites runtimes/cpp/unicode_tables.h

Stages (as the Rust BertNormalizer applies them, each character on its own):
    clean_text     removed (controls, unassigned, U+0000, U+FFFD) or turned into a space
    strip_accents  NFD, non-spacing marks dropped (Hangul syllables are decomposed in code)
    lowercase      the Unicode lowercase mapping
Pre-tokenizer: which characters split words (whitespace) and which stand alone (punctuation).
ByteLevel (GPT-2's split, runtimes/cpp/bpe.h): letters, numbers and whitespace as its regex sees them.
NFC (Qwen2's normalizer, runtimes/cpp/nfc.h): each code point's full canonical decomposition, the
combining classes and the primary composites, as the library's (older) Unicode data has them:
its combining classes lag Python 3.11's on 98 code points, so they are probed, not copied.
"""

from __future__ import annotations

import sys
import unicodedata
from importlib.metadata import version
from pathlib import Path

from tokenizers import normalizers, pre_tokenizers

OUT = Path(__file__).resolve().parents[1] / "runtimes" / "cpp" / "unicode_tables.h"
KOTLIN = OUT.parents[1] / "android" / "UnicodeTables.kt"  # WordPiece's tables for runtimes/android/WordPiece.kt
HANGUL = range(0xAC00, 0xAC00 + 11172)


def code_points():
    return (c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)


def ranges(cps: list[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for c in cps:
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return [tuple(r) for r in out]


def mapping(norm) -> dict[int, str]:
    return {c: s for c in code_points() if c not in HANGUL and (s := norm.normalize_str(chr(c))) != chr(c)}


def byte_level_classes() -> tuple[list[int], list[int], list[int]]:
    """The code points ByteLevel's GPT-2 split (use_regex) counts as \\p{L}, \\p{N} and \\s,
    read off its pieces: a letter joins a run after "a", a number one after "1", any other
    non-space character one between "!"s; what is left splits there: whitespace."""
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)

    def pieces(text: str) -> int:
        return len(pre.pre_tokenize_str(text))

    letters, numbers, white = [], [], []
    for c in code_points():
        ch = chr(c)
        if pieces(f"a{ch}") == 1:
            letters.append(c)
        elif pieces(f"1{ch}") == 1:
            numbers.append(c)
        elif pieces(f"!{ch}!") != 1:
            white.append(c)
    return letters, numbers, white


def combining_classes(decomposed: dict[int, str]) -> dict[int, int]:
    """The library's canonical combining class of every code point that does not decompose and is
    not a starter, probed: mark m then c is reordered by NFD exactly when 0 < ccc(c) < ccc(m), so
    ccc(c) is the largest class v whose representative mark m_v is not reordered before c.
    Python's `unicodedata` proposes the class values and one mark per value (the oldest)."""
    nfd = normalizers.NFD()

    def reordered(m: str, c: str) -> bool:
        return nfd.normalize_str(m + c) != nfd.normalize_str(m) + nfd.normalize_str(c)

    top = max(map(unicodedata.combining, map(chr, code_points())))  # 240, U+0345's
    reps: dict[int, str] = {}
    for c in code_points():  # the first mark of each class that the library knows as a non-starter
        v = unicodedata.combining(chr(c))
        if v and v not in reps and c not in decomposed and (v == top or reordered("\u0345", chr(c))):
            reps[v] = chr(c)
    classes = {}
    for c in code_points():
        ch = chr(c)
        if c in decomposed or not (reordered(reps[top], ch) or (reordered(ch, reps[min(reps)]) and unicodedata.combining(ch) == top)):
            continue  # a starter (or a decomposing character: its decomposition's classes are used)
        classes[c] = max(v for v, m in reps.items() if not reordered(m, ch))
    for v, m in reps.items():  # each representative must have the class it stands for
        if classes.get(ord(m)) != v:
            raise SystemExit(f"U+{ord(m):04X} stands for class {v} but probes as {classes.get(ord(m))}")
    return classes


def primary_composites(decomposed: dict[int, str]) -> list[tuple[int, int, int]]:
    """(first, second, composite) for every composite NFC builds (the library's NFC leaves it as it
    is), its pair from Python's first-level decomposition, checked against the library's NFC."""
    nfc = normalizers.NFC()
    out = []
    for c in decomposed:
        if nfc.normalize_str(chr(c)) != chr(c):
            continue  # a singleton or an excluded composite
        pair = [int(x, 16) for x in unicodedata.decomposition(chr(c)).split()]
        if len(pair) != 2 or nfc.normalize_str(chr(pair[0]) + chr(pair[1])) != chr(c):
            raise SystemExit(f"U+{c:04X}: first-level decomposition {pair} does not compose back in the library's NFC")
        out.append((pair[0], pair[1], c))
    return sorted(out)


def write_kotlin(range_tables: dict[str, list[tuple[int, int]]], maps: dict[str, dict[int, str]]) -> None:
    """The WordPiece tables as Kotlin string constants of hex numbers, decoded once at first use
    (an array literal this size would pass the JVM's 64 KB limit on one method's code)."""
    def chunks(numbers: list[int]) -> str:
        text = ",".join(f"{x:x}" for x in numbers)
        parts = [text[i:i + 30000] for i in range(0, len(text), 30000)] or [""]
        return " +\n        ".join(f'"{part}"' for part in parts)

    lines = [f"// Generated by tools/gen_unicode_tables.py from tokenizers {version('tokenizers')}: do not edit.",
             "// BertNormalizer's and BertPreTokenizer's per-character data for WordPiece.kt (the C++ runner's",
             "// unicode_tables.h, the same numbers): ranges as lo,hi pairs; maps as code point, then its mapping.",
             "package ai.edgeformer", "", "internal object UnicodeTables {",
             "    private fun ints(hex: String): IntArray =",
             "        if (hex.length == 0) IntArray(0) else hex.split(',').map { it.toInt(16) }.toIntArray()", ""]
    for name, rs in range_tables.items():
        lines += [f"    val {name}: IntArray by lazy {{ ints(", f"        {chunks([x for r in rs for x in r])}) }}"]
    for name, m in maps.items():  # code point, length, then the mapped code points
        flat = [x for c in sorted(m) for x in (c, len(m[c]), *map(ord, m[c]))]
        lines += [f"    val {name}: IntArray by lazy {{ ints(", f"        {chunks(flat)}) }}"]
    lines += ["}", ""]
    KOTLIN.write_text("\n".join(lines))


def main() -> int:
    clean = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    removed, spaces = [], []
    for c in code_points():
        s = clean.normalize_str(chr(c))
        if s == "":
            removed.append(c)
        elif s == " " and c != 0x20:
            spaces.append(c)
        elif s != chr(c):
            raise SystemExit(f"clean_text maps U+{c:04X} to {s!r}: not a removal or a space")
    strip = mapping(normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False))
    lower = mapping(normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=True))
    chinese = [c for c in code_points()
               if normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=True, strip_accents=False,
                                             lowercase=False).normalize_str(chr(c)) == f" {chr(c)} "]
    pre = pre_tokenizers.BertPreTokenizer()
    split, punct = [], []
    for c in code_points():
        pieces = [p for p, _ in pre.pre_tokenize_str(f"a{chr(c)}a")]
        if pieces == ["a", "a"]:
            split.append(c)
        elif pieces == ["a", chr(c), "a"]:
            punct.append(c)
    letters, numbers, white = byte_level_classes()
    decomposed = mapping(normalizers.NFD())  # Hangul syllables are decomposed in code
    classes = combining_classes(decomposed)
    composites = primary_composites(decomposed)
    lines = [
        f"// Generated by tools/gen_unicode_tables.py from tokenizers {version('tokenizers')}: do not edit.",
        "// Per-character behaviour of BertNormalizer and BertPreTokenizer, and the character",
        "// classes of ByteLevel's split (\\p{L}, \\p{N}, \\s), and NFC's data (see that script).",
        "#pragma once", "", "#include <cstdint>", "", "namespace unicode_tables {", "",
        "struct Range { uint32_t lo, hi; };",
        "struct Map { uint32_t cp; uint32_t at; uint8_t len; };  // cp -> pool[at, at + len)",
        "struct Class { uint32_t cp; uint8_t ccc; };  // canonical combining class (absent: 0)",
        "struct Pair { uint32_t first, second, composite; };  // sorted by (first, second)", "",
    ]
    for name, rs in (("kRemoved", ranges(removed)), ("kSpace", ranges(spaces)), ("kChinese", ranges(chinese)),
                     ("kSplit", ranges(split)), ("kPunct", ranges(punct)), ("kLetter", ranges(letters)),
                     ("kNumber", ranges(numbers)), ("kWhite", ranges(white))):
        body = ", ".join(f"{{0x{a:X}, 0x{b:X}}}" for a, b in rs)
        lines += [f"inline constexpr Range {name}[] = {{{body}}};"]
    lines += ["inline constexpr Class kCombining[] = {" + ", ".join(f"{{0x{c:X}, {v}}}" for c, v in sorted(classes.items())) + "};",
              "inline constexpr Pair kCompose[] = {" + ", ".join(f"{{0x{a:X}, 0x{b:X}, 0x{c:X}}}" for a, b, c in composites) + "};"]
    for name, m in (("Strip", strip), ("Lower", lower), ("Decompose", decomposed)):
        pool, entries = [], []
        for c in sorted(m):
            entries.append(f"{{0x{c:X}, {len(pool)}, {len(m[c])}}}")
            pool += [ord(x) for x in m[c]]
        pool = pool or [0]
        lines += [f"inline constexpr uint32_t k{name}Pool[] = {{{', '.join(f'0x{x:X}' for x in pool)}}};",
                  f"inline constexpr Map k{name}[] = {{{', '.join(entries)}}};"]
    lines += ["", "}  // namespace unicode_tables", ""]
    text = "\n".join(lines)
    OUT.write_text(text)
    write_kotlin(dict(removed=ranges(removed), space=ranges(spaces), chinese=ranges(chinese), split=ranges(split),
                      punct=ranges(punct)), dict(strip=strip, lower=lower))
    print(f"wrote {OUT} ({len(text) // 1024} KiB): removed {len(removed)}, space {len(spaces)}, chinese {len(chinese)}, "
          f"split {len(split)}, punct {len(punct)}, strip {len(strip)}, lower {len(lower)}, decompose {len(decomposed)}, "
          f"combining {len(classes)}, compose {len(composites)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
