// Byte-level BPE (GPT-2's scheme: SmolLM2; Llama 3's and Qwen2's split), read from a Hugging Face
// tokenizer.json: the same ids as `tokenizers` for the configurations it accepts, refused by name otherwise.
//
//   added tokens  split out first, leftmost then longest (<|im_start|> ...), never merged
//   pre-tokenizer one of two, with the library's own character classes (unicode_tables.h):
//                 ByteLevel(use_regex): GPT-2's 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//                 Sequence[Split(Isolated), ByteLevel(use_regex=false)] with Llama 3's pattern
//                   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//                   or Qwen2's (\p{N} one digit at a time), each matched by hand (split_end)
//                 then each byte of a piece as its printable stand-in character (bytes_to_unicode)
//   BPE           a piece the vocabulary holds whole is one token under ignore_merges (Llama 3);
//                 else the lowest-ranked adjacent pair merged first, leftmost on ties, until none is left
//   normalizer    NFC (Qwen2, Qwen3; nfc.h) on the text between added tokens, or none
//   post-processor TemplateProcessing's special tokens around the text (Llama 3's <|begin_of_text|>)
//
// Not read (std::invalid_argument naming it): other normalizers, other pre-tokenizers and
// Split patterns, add_prefix_space, byte fallback, subword prefixes and suffixes, dropout, added
// tokens with lstrip/rstrip/single_word, post-processors other than a template and ByteLevel.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "json.h"
#include "nfc.h"
#include "unicode_tables.h"
#include "wordpiece.h"

namespace bpe {

class Tokenizer {
 public:
  explicit Tokenizer(const json::Value& tj) {
    const auto& model = tj["model"];
    if (model["type"].as_str() != "BPE")
      throw std::invalid_argument("model is " + model["type"].as_str() + "; this tokenizer reads byte-level BPE");
    if (tj.has("normalizer")) {
      nfc_ = tj["normalizer"]["type"].as_str() == "NFC";
      if (!nfc_) throw std::invalid_argument("normalizer " + tj["normalizer"]["type"].as_str() + " is not read by this runner (NFC is)");
    }
    read_pre_tokenizer(tj["pre_tokenizer"]);
    if (model.has("byte_fallback") && model["byte_fallback"].b) throw std::invalid_argument("BPE byte_fallback is not read by this runner");
    ignore_merges_ = model.has("ignore_merges") && model["ignore_merges"].b;
    for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (model.has(field) && !model[field].as_str().empty())
        throw std::invalid_argument(std::string("BPE ") + field + " is not read by this runner");
    if (model.has("dropout")) throw std::invalid_argument("BPE dropout is not read by this runner");
    read_post_processor(tj["post_processor"]);

    for (const auto& [token, id] : model["vocab"].obj) vocab_.emplace(token, id.as_int());
    int64_t size = 0;
    for (const auto& [token, id] : vocab_) size = std::max(size, id + 1);
    for (const auto& t : tj["added_tokens"].arr) size = std::max(size, t["id"].as_int() + 1);
    id_to_token_.assign(size, "");
    for (const auto& [token, id] : vocab_) id_to_token_[id] = token;
    for (const auto& t : tj["added_tokens"].arr) {
      for (const char* flag : {"lstrip", "rstrip", "single_word"})
        if (t[flag].b) throw std::invalid_argument("added token " + t["content"].as_str() + " has " + flag + ", which this runner does not match");
      if (nfc_ && t["normalized"].b)  // matched in the normalized text, where this runner matches them in the raw one
        throw std::invalid_argument("added token " + t["content"].as_str() + " is normalized, which this runner does not match after NFC");
      id_to_token_[t["id"].as_int()] = t["content"].as_str();
      added_.emplace_back(t["content"].as_str(), t["id"].as_int());
      (t["special"].b ? special_ : plain_added_).push_back(t["id"].as_int());
    }
    std::stable_sort(added_.begin(), added_.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });

    int b2u = 0;  // bytes_to_unicode: printable bytes stand for themselves, the rest for 256, 257, ...
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      uint32_t cp = printable ? b : 256 + b2u++;
      json::append_utf8(byte_char_[b], cp);
      char_byte_[cp] = static_cast<uint8_t>(b);
      auto it = vocab_.find(byte_char_[b]);
      byte_id_[b] = it == vocab_.end() ? -1 : it->second;
    }
    int64_t rank = 0;
    for (const auto& m : model["merges"].arr) {
      std::string a, b;
      if (m.kind == json::Value::Kind::Array) {
        a = m.arr.at(0).as_str(), b = m.arr.at(1).as_str();
      } else {
        const std::string& s = m.as_str();
        size_t sp = s.find(' ');
        if (sp == std::string::npos) throw std::invalid_argument("merge \"" + s + "\" is not two tokens");
        a = s.substr(0, sp), b = s.substr(sp + 1);
      }
      auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b);
      if (ia == vocab_.end() || ib == vocab_.end() || iab == vocab_.end())
        throw std::invalid_argument("merge " + a + " " + b + " names a token the vocabulary lacks");
      merges_.emplace(key(ia->second, ib->second), std::make_pair(rank++, iab->second));
    }
  }

  // Token ids of `text` (malformed UTF-8 reads as U+FFFD, as the Python side decodes it).
  std::vector<int64_t> encode(const std::string& text) const {
    std::vector<int64_t> ids(prefix_);
    std::string s = utf8(wordpiece::decode(text));
    size_t i = 0;
    while (i < s.size()) {  // the next added token, leftmost then longest
      size_t at = std::string::npos;
      const std::pair<std::string, int64_t>* hit = nullptr;
      for (const auto& t : added_) {
        size_t p = s.find(t.first, i);
        if (p != std::string::npos && (p < at)) at = p, hit = &t;
      }
      encode_plain(s.substr(i, (hit ? at : s.size()) - i), ids);
      if (!hit) break;
      ids.push_back(hit->second);
      i = at + hit->first.size();
    }
    ids.insert(ids.end(), suffix_.begin(), suffix_.end());
    return ids;
  }

  // The text of `ids`, special tokens left out; bytes that do not end a UTF-8 character
  // (a generation cut mid-character) come out as U+FFFD.
  std::string decode(const std::vector<int64_t>& ids) const {
    std::string bytes;
    for (int64_t id : ids) {
      if (id < 0 || id >= static_cast<int64_t>(id_to_token_.size()) ||
          std::find(special_.begin(), special_.end(), id) != special_.end())
        continue;
      if (std::find(plain_added_.begin(), plain_added_.end(), id) != plain_added_.end()) {
        bytes += id_to_token_[id];  // an added token is its text, not byte stand-ins
        continue;
      }
      for (uint32_t cp : wordpiece::decode(id_to_token_[id])) {
        auto it = char_byte_.find(cp);
        if (it != char_byte_.end()) bytes.push_back(static_cast<char>(it->second));
      }
    }
    return utf8(wordpiece::decode(bytes));
  }

 private:
  static uint64_t key(int64_t a, int64_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

  static std::string utf8(const wordpiece::u32string& cps) {
    std::string out;
    for (uint32_t cp : cps) json::append_utf8(out, cp);
    return out;
  }

  // The patterns of Split pre-tokenizers this runner matches (split_end), and their longest digit run.
  static constexpr const char* kLlama3Split =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  static constexpr const char* kQwen2Split =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

  void read_pre_tokenizer(const json::Value& pre) {
    const std::string type = pre.is_null() ? "none" : pre["type"].as_str();
    if (type == "ByteLevel" && pre["use_regex"].b) {
      if (pre["add_prefix_space"].b) throw std::invalid_argument("ByteLevel add_prefix_space is not read by this runner");
      return;  // max_digits_ 0: GPT-2's split
    }
    const auto* steps = type == "Sequence" ? &pre["pretokenizers"].arr : nullptr;
    if (steps && steps->size() == 2 && (*steps)[0]["type"].as_str() == "Split" && (*steps)[1]["type"].as_str() == "ByteLevel") {
      const auto& split = (*steps)[0];
      const auto& bytes = (*steps)[1];
      std::string pattern = split["pattern"].has("Regex") ? split["pattern"]["Regex"].as_str() : "(a String pattern)";
      max_digits_ = pattern == kLlama3Split ? 3 : pattern == kQwen2Split ? 1 : 0;
      if (!max_digits_) throw std::invalid_argument("Split pattern " + pattern + " is not one this runner matches (Llama 3's or Qwen2's)");
      if (split["behavior"].as_str() != "Isolated" || split["invert"].b)
        throw std::invalid_argument("Split behavior " + split["behavior"].as_str() + (split["invert"].b ? " (inverted)" : "") +
                                    " is not read by this runner (Isolated is)");
      if (bytes["use_regex"].b || bytes["add_prefix_space"].b)
        throw std::invalid_argument("ByteLevel after Split with use_regex or add_prefix_space is not read by this runner");
      return;
    }
    throw std::invalid_argument("pre_tokenizer " + type + " is not read; this runner splits as GPT-2's ByteLevel (use_regex) "
                                "or Llama 3 / Qwen2's Split + ByteLevel do");
  }

  // Special tokens a TemplateProcessing puts around a single text (none for ByteLevel).
  void read_post_processor(const json::Value& pp) {
    if (pp.is_null() || pp["type"].as_str() == "ByteLevel") return;
    if (pp["type"].as_str() == "Sequence") {
      for (const auto& step : pp["processors"].arr) read_post_processor(step);
      return;
    }
    if (pp["type"].as_str() != "TemplateProcessing")
      throw std::invalid_argument("post_processor " + pp["type"].as_str() + " adds tokens, which this runner does not");
    bool text_seen = false;
    for (const auto& item : pp["single"].arr) {
      if (item.has("Sequence")) {
        text_seen = true;
        continue;
      }
      for (const auto& id : pp["special_tokens"][item["SpecialToken"]["id"].as_str()]["ids"].arr)
        (text_seen ? suffix_ : prefix_).push_back(id.as_int());
    }
  }

  template <size_t N>
  static bool in(const unicode_tables::Range (&table)[N], uint32_t cp) { return wordpiece::in_ranges(table, cp); }
  static bool letter(uint32_t c) { return in(unicode_tables::kLetter, c); }
  static bool number(uint32_t c) { return in(unicode_tables::kNumber, c); }
  static bool white(uint32_t c) { return in(unicode_tables::kWhite, c); }
  static bool other(uint32_t c) { return !letter(c) && !number(c) && !white(c); }

  // The end of the piece that starts at i (GPT-2's alternatives, tried in order).
  static size_t piece_end(const wordpiece::u32string& c, size_t i) {
    size_t n = c.size();
    if (c[i] == '\'' && i + 1 < n) {
      uint32_t a = c[i + 1], b = i + 2 < n ? c[i + 2] : 0;
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
      if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    }
    size_t j = i + (c[i] == ' ' && i + 1 < n ? 1 : 0);  // the optional space of the next three
    for (bool (*cls)(uint32_t) : {letter, number, other}) {
      if (cls(c[j]) && (j == i || c[i] == ' ')) {
        while (j < n && cls(c[j])) ++j;
        return j;
      }
    }
    size_t k = i;
    while (k < n && white(c[k])) ++k;
    if (k == i) return i + 1;  // unreachable: every character is in one class
    if (k == n || k - i == 1) return k;  // \s+(?!\S) at the end, or \s+ for a single one
    return k - 1;  // \s+(?!\S) leaves the last space to the word after it
  }

  static bool newline(uint32_t c) { return c == '\r' || c == '\n'; }
  static uint32_t fold(uint32_t c) { return c == 0x17F ? 's' : (c >= 'A' && c <= 'Z') ? c + 32 : c; }  // (?i:) on 's 't ...

  // The end of the piece that starts at i under Llama 3's / Qwen2's Split pattern (the header's),
  // alternatives tried in order, each as greedy as the regex engine makes it.
  static size_t split_end(const wordpiece::u32string& c, size_t i, size_t max_digits) {
    size_t n = c.size();
    if (c[i] == '\'' && i + 1 < n) {
      uint32_t a = fold(c[i + 1]), b = i + 2 < n ? fold(c[i + 2]) : 0;
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
      if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    }
    auto run = [&](size_t j, bool (*cls)(uint32_t), size_t most) {
      size_t from = j;
      while (j < n && j - from < most && cls(c[j])) ++j;
      return j;
    };
    if (!newline(c[i]) && !letter(c[i]) && !number(c[i]) && i + 1 < n && letter(c[i + 1])) return run(i + 1, letter, n);
    if (letter(c[i])) return run(i, letter, n);
    if (number(c[i])) return run(i, number, max_digits);
    size_t j = i + (c[i] == ' ' && i + 1 < n && other(c[i + 1]) ? 1 : 0);
    if (other(c[j])) return run(run(j, other, n), newline, n);
    size_t k = run(i, white, n), last_newline = k;
    for (size_t p = i; p < k; ++p)
      if (newline(c[p])) last_newline = p;
    if (last_newline < k) return last_newline + 1;  // \s*[\r\n]+ ends at the run's last line break
    if (k == n || k - i == 1) return k;  // \s+(?!\S) at the end, or \s+ for a single one
    return k - 1;  // \s+(?!\S) leaves the last space to the word after it
  }

  void encode_plain(const std::string& s, std::vector<int64_t>& ids) const {
    wordpiece::u32string c = nfc_ ? nfc::normalize(wordpiece::decode(s)) : wordpiece::decode(s);  // between added tokens, as tokenizers
    for (size_t i = 0; i < c.size();) {
      size_t e = max_digits_ ? split_end(c, i, max_digits_) : piece_end(c, i);
      std::string piece = utf8(wordpiece::u32string(c.begin() + i, c.begin() + e));
      merge(piece, ids);
      i = e;
    }
  }

  void merge(const std::string& piece, std::vector<int64_t>& ids) const {
    if (ignore_merges_) {  // the whole piece, when the vocabulary has it
      std::string whole;
      for (unsigned char b : piece) whole += byte_char_[b];
      auto it = vocab_.find(whole);
      if (it != vocab_.end()) return ids.push_back(it->second);
    }
    std::vector<int64_t> sym;
    for (unsigned char b : piece) {
      if (byte_id_[b] < 0) throw std::invalid_argument("the vocabulary has no token for byte " + std::to_string(b));
      sym.push_back(byte_id_[b]);
    }
    auto rank_at = [&](size_t k) {
      auto it = merges_.find(key(sym[k], sym[k + 1]));
      return it == merges_.end() ? LLONG_MAX : it->second.first;
    };
    std::vector<int64_t> rank(sym.size() > 1 ? sym.size() - 1 : 0);
    for (size_t k = 0; k < rank.size(); ++k) rank[k] = rank_at(k);
    while (!rank.empty()) {
      size_t best = std::min_element(rank.begin(), rank.end()) - rank.begin();  // leftmost of the lowest
      if (rank[best] == LLONG_MAX) break;
      sym[best] = merges_.at(key(sym[best], sym[best + 1])).second;
      sym.erase(sym.begin() + best + 1);
      rank.erase(rank.begin() + best);
      if (best < rank.size()) rank[best] = rank_at(best);
      if (best > 0) rank[best - 1] = rank_at(best - 1);
    }
    ids.insert(ids.end(), sym.begin(), sym.end());
  }

  std::unordered_map<std::string, int64_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<std::pair<std::string, int64_t>> added_;  // longest first
  std::vector<int64_t> special_, plain_added_;  // added tokens left out of decoded text / kept as written
  std::unordered_map<uint64_t, std::pair<int64_t, int64_t>> merges_;  // (a, b) -> (rank, merged id)
  std::string byte_char_[256];
  int64_t byte_id_[256];
  std::unordered_map<uint32_t, uint8_t> char_byte_;
  bool nfc_ = false;  // the normalizer: none or NFC (Qwen2's)
  size_t max_digits_ = 0;  // 0: GPT-2's ByteLevel split; else Llama 3's (3) or Qwen2's (1) Split
  bool ignore_merges_ = false;
  std::vector<int64_t> prefix_, suffix_;  // the post-processor's special tokens around the text
};

}  // namespace bpe
