// WordPiece tokenization (the BERT family) from a Hugging Face tokenizer.json, in plain C++:
// the text an app has in, the ids the .pte takes out, id for id what `tokenizers` gives.
//
//   wordpiece::Tokenizer tok(json::Parser(text_of_tokenizer_json).parse());
//   auto enc = tok.encode("the coffee was stale", 128);   // enc.ids: [CLS] ... [SEP], cut to 128
//
// It reads what BERT-style tokenizer.json files hold: added tokens (matched in the raw text),
// a BertNormalizer (clean_text, handle_chinese_chars, strip_accents, lowercase), a
// BertPreTokenizer, a WordPiece model and a TemplateProcessing or BertProcessing post-processor.
// Anything else is refused by name. The per-character Unicode behaviour comes from
// unicode_tables.h, generated from the tokenizers library itself (tools/gen_unicode_tables.py).
// Text that is not UTF-8 is read with U+FFFD for each bad byte (Python's "replace" gives one per
// maximal bad sequence; the same ids wherever clean_text drops U+FFFD, as BERT's does).
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "json.h"
#include "unicode_tables.h"

namespace wordpiece {

using u32string = std::vector<uint32_t>;

// UTF-8 -> code points; each byte of a malformed sequence becomes U+FFFD.
inline u32string decode(const std::string& s) {
  u32string out;
  out.reserve(s.size());
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    bool ok = len > 0 && i + len <= n;
    for (int k = 1; ok && k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc >> 6) == 0x2;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // overlong forms, surrogates and code points past U+10FFFF are not UTF-8 either
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (ok && (cp < kMin[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)) ok = false;
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

template <size_t N>
bool in_ranges(const unicode_tables::Range (&table)[N], uint32_t cp) {
  auto it = std::upper_bound(table, table + N, cp, [](uint32_t c, const unicode_tables::Range& r) { return c < r.lo; });
  return it != table && cp <= (it - 1)->hi;
}

// Appends the mapping of cp (or cp itself when it has none).
template <size_t N, size_t P>
void map_into(const unicode_tables::Map (&table)[N], const uint32_t (&pool)[P], uint32_t cp, u32string& out) {
  auto it = std::lower_bound(table, table + N, cp, [](const unicode_tables::Map& m, uint32_t c) { return m.cp < c; });
  if (it != table + N && it->cp == cp) out.insert(out.end(), pool + it->at, pool + it->at + it->len);
  else out.push_back(cp);
}

struct Encoding {
  std::vector<int64_t> ids;
  size_t num_tokens = 0;  // before truncation, special tokens included
  bool truncated = false;
};

class Tokenizer {
 public:
  explicit Tokenizer(const json::Value& tj) {
    const auto& model = tj["model"];
    if (model["type"].kind != json::Value::Kind::String || model["type"].as_str() != "WordPiece")
      throw std::invalid_argument("the tokenizer's model is " + type_of(model) + "; this runner tokenizes WordPiece (the "
                                  "BERT family) only: pass token ids with --inputs");
    for (const auto& [piece, id] : model["vocab"].obj) vocab_[piece] = id.as_int();
    unk_ = id_of(model["unk_token"].as_str());
    prefix_ = model.has("continuing_subword_prefix") ? model["continuing_subword_prefix"].as_str() : "##";
    max_chars_ = model.has("max_input_chars_per_word") ? static_cast<size_t>(model["max_input_chars_per_word"].as_int()) : 100;
    read_normalizer(tj["normalizer"]);
    const auto& pre = tj["pre_tokenizer"];
    if (pre.is_null() || type_of(pre) != "BertPreTokenizer")
      throw std::invalid_argument("the tokenizer's pre-tokenizer is " + type_of(pre) + "; this runner reads BertPreTokenizer: pass token ids with --inputs");
    read_post_processor(tj["post_processor"]);
    for (const auto& t : tj["added_tokens"].arr) {  // matched in the raw text, before normalization
      if (t["normalized"].b || t["single_word"].b)
        throw std::invalid_argument("added token " + t["content"].as_str() + " is " + (t["normalized"].b ? "normalized" : "single_word") +
                                    ", which this runner does not match; pass token ids with --inputs");
      added_.emplace_back(decode(t["content"].as_str()), t["id"].as_int());
    }
    std::sort(added_.begin(), added_.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }

  size_t specials() const { return head_.size() + tail_.size(); }

  // ids for `text`, cut to max_len with the special tokens (0: no cut).
  Encoding encode(const std::string& text, size_t max_len) const {
    std::vector<int64_t> words;
    u32string cps = decode(text), chunk;
    for (size_t i = 0; i < cps.size();) {
      int64_t id = 0;
      size_t n = added_at(cps, i, id);
      if (n == 0) {
        chunk.push_back(cps[i++]);
        continue;
      }
      tokenize(chunk, words);
      chunk.clear();
      words.push_back(id);
      i += n;
    }
    tokenize(chunk, words);
    Encoding e;
    e.num_tokens = words.size() + specials();
    if (max_len && e.num_tokens > max_len) {
      e.truncated = true;
      words.resize(max_len > specials() ? max_len - specials() : 0);
    }
    e.ids = head_;
    e.ids.insert(e.ids.end(), words.begin(), words.end());
    e.ids.insert(e.ids.end(), tail_.begin(), tail_.end());
    return e;
  }

 private:
  std::unordered_map<std::string, int64_t> vocab_;
  std::vector<std::pair<u32string, int64_t>> added_;
  std::vector<int64_t> head_, tail_;
  int64_t unk_ = 0;
  std::string prefix_;
  size_t max_chars_ = 100;
  bool clean_ = true, chinese_ = true, strip_ = true, lower_ = true;

  static std::string type_of(const json::Value& v) {
    if (v.is_null()) return "none";
    return v["type"].kind == json::Value::Kind::String ? v["type"].as_str() : "unknown";
  }

  int64_t id_of(const std::string& token) const {
    auto it = vocab_.find(token);
    if (it == vocab_.end()) throw std::invalid_argument("the tokenizer's vocabulary has no " + token);
    return it->second;
  }

  void read_normalizer(const json::Value& n) {
    if (n.is_null() || type_of(n) != "BertNormalizer")
      throw std::invalid_argument("the tokenizer's normalizer is " + type_of(n) + "; this runner reads BertNormalizer: pass token ids with --inputs");
    auto flag = [&](const char* k, bool dflt) { return n[k].is_null() ? dflt : n[k].b; };
    clean_ = flag("clean_text", true);
    chinese_ = flag("handle_chinese_chars", true);
    lower_ = flag("lowercase", true);
    strip_ = flag("strip_accents", lower_);  // null: follows lowercase, as in BERT
  }

  void read_post_processor(const json::Value& p) {
    std::string type = type_of(p);
    if (type == "BertProcessing") {
      head_ = {p["cls"].arr.at(1).as_int()};
      tail_ = {p["sep"].arr.at(1).as_int()};
    } else if (type == "TemplateProcessing") {
      bool seen = false;
      for (const auto& piece : p["single"].arr) {
        if (piece.has("Sequence")) {
          seen = true;
          continue;
        }
        const std::string& name = piece["SpecialToken"]["id"].as_str();
        const auto& ids = p["special_tokens"][name]["ids"];
        for (const auto& id : ids.arr) (seen ? tail_ : head_).push_back(id.as_int());
      }
    } else if (type != "none") {
      throw std::invalid_argument("the tokenizer's post-processor is " + type + "; this runner reads TemplateProcessing "
                                  "and BertProcessing: pass token ids with --inputs");
    }
  }

  // Length of the added token starting at cps[i] (longest first), 0 if none.
  size_t added_at(const u32string& cps, size_t i, int64_t& id) const {
    for (const auto& [tok, tid] : added_) {
      if (!tok.empty() && i + tok.size() <= cps.size() && std::equal(tok.begin(), tok.end(), cps.begin() + i)) {
        id = tid;
        return tok.size();
      }
    }
    return 0;
  }

  // BertNormalizer, one character at a time (as the Rust implementation maps characters).
  u32string normalize(const u32string& in) const {
    namespace T = unicode_tables;
    u32string out, stripped;
    out.reserve(in.size());
    for (uint32_t cp : in) {
      if (clean_ && in_ranges(T::kRemoved, cp)) continue;
      if (clean_ && in_ranges(T::kSpace, cp)) cp = ' ';
      bool han = chinese_ && in_ranges(T::kChinese, cp);
      if (han) out.push_back(' ');
      stripped.clear();
      if (strip_ && cp >= 0xAC00 && cp < 0xAC00 + 11172) {  // Hangul syllable: its jamo, by arithmetic
        uint32_t s = cp - 0xAC00;
        stripped = {0x1100 + s / 588, 0x1161 + (s % 588) / 28};
        if (s % 28) stripped.push_back(0x11A7 + s % 28);
      } else if (strip_) {
        map_into(T::kStrip, T::kStripPool, cp, stripped);
      } else {
        stripped.push_back(cp);
      }
      for (uint32_t c : stripped) {
        if (lower_) map_into(T::kLower, T::kLowerPool, c, out);
        else out.push_back(c);
      }
      if (han) out.push_back(' ');
    }
    return out;
  }

  // Normalize, split into words (whitespace splits, punctuation stands alone), WordPiece each.
  void tokenize(const u32string& raw, std::vector<int64_t>& ids) const {
    if (raw.empty()) return;
    u32string text = normalize(raw), word;
    for (uint32_t cp : text) {
      if (in_ranges(unicode_tables::kSplit, cp)) {
        piece(word, ids);
      } else if (in_ranges(unicode_tables::kPunct, cp)) {
        piece(word, ids);
        word.push_back(cp);
        piece(word, ids);
      } else {
        word.push_back(cp);
      }
    }
    piece(word, ids);
  }

  // Greedy longest-match-first WordPiece of one word (cleared after); [UNK] for a word with a
  // piece not in the vocabulary or more than max_input_chars_per_word characters.
  void piece(u32string& word, std::vector<int64_t>& ids) const {
    if (word.empty()) return;
    if (word.size() > max_chars_) {
      ids.push_back(unk_);
      word.clear();
      return;
    }
    std::vector<int64_t> out;
    for (size_t start = 0; start < word.size();) {
      size_t end = word.size();
      int64_t found = -1;
      for (; end > start; --end) {
        std::string sub = start > 0 ? prefix_ : "";
        for (size_t k = start; k < end; ++k) json::append_utf8(sub, word[k]);
        auto it = vocab_.find(sub);
        if (it != vocab_.end()) {
          found = it->second;
          break;
        }
      }
      if (found < 0) {
        out = {unk_};
        break;
      }
      out.push_back(found);
      start = end;
    }
    ids.insert(ids.end(), out.begin(), out.end());
    word.clear();
  }
};

}  // namespace wordpiece
