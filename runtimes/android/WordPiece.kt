// WordPiece tokenization (the BERT family) from a Hugging Face tokenizer.json, in plain Kotlin:
// id for id what `tokenizers` gives, as the C++ runner's wordpiece.h (the same rules, the same
// generated Unicode data: UnicodeTables.kt). Needs only org.json, which Android ships.
//
//   val tok = WordPiece(JSONObject(File(dir, "tokenizer.json").readText()))
//   val enc = tok.encode("the coffee was stale", 128)   // enc.ids: [CLS] ... [SEP], cut to 128
//
// Reads added tokens (matched in the raw text), a BertNormalizer (clean_text, handle_chinese_chars,
// strip_accents, lowercase), a BertPreTokenizer, a WordPiece model and a TemplateProcessing or
// BertProcessing post-processor; anything else is an IllegalArgumentException naming it.
// A lone UTF-16 surrogate reads as U+FFFD, as the C++ runner reads a byte that is not UTF-8.
package ai.edgeformer

import org.json.JSONObject

class WordPiece(tokenizerJson: JSONObject) {
    /** ids: the special tokens around the text's pieces; numTokens: before the cut. */
    class Encoding(val ids: LongArray, val numTokens: Int, val truncated: Boolean)

    private val vocab = HashMap<String, Long>()
    private val added = ArrayList<Pair<IntArray, Long>>()  // longest first
    private val head = ArrayList<Long>()
    private val tail = ArrayList<Long>()
    private val unk: Long
    private val prefix: String
    private val maxChars: Int
    private var clean = true
    private var chinese = true
    private var strip = true
    private var lower = true

    init {
        val model = tokenizerJson.getJSONObject("model")
        require(model.optString("type") == "WordPiece") {
            "the tokenizer's model is ${model.optString("type")}; WordPiece reads the BERT family only"
        }
        val v = model.getJSONObject("vocab")
        for (piece in v.keys()) vocab[piece] = v.getLong(piece)
        unk = vocab[model.getString("unk_token")] ?: throw IllegalArgumentException("the vocabulary has no ${model.getString("unk_token")}")
        prefix = if (model.isNull("continuing_subword_prefix")) "##" else model.getString("continuing_subword_prefix")
        maxChars = if (model.isNull("max_input_chars_per_word")) 100 else model.getInt("max_input_chars_per_word")
        readNormalizer(tokenizerJson.optJSONObject("normalizer"))
        val pre = tokenizerJson.optJSONObject("pre_tokenizer")
        require(pre?.optString("type") == "BertPreTokenizer") { "the tokenizer's pre-tokenizer is ${typeOf(pre)}; WordPiece reads BertPreTokenizer" }
        readPostProcessor(tokenizerJson.optJSONObject("post_processor"))
        val a = tokenizerJson.optJSONArray("added_tokens")
        for (i in 0 until (a?.length() ?: 0)) {
            val t = a!!.getJSONObject(i)
            require(!t.optBoolean("normalized") && !t.optBoolean("single_word")) {
                "added token ${t.getString("content")} is ${if (t.optBoolean("normalized")) "normalized" else "single_word"}, which WordPiece does not match"
            }
            added.add(Pair(codePoints(t.getString("content")), t.getLong("id")))
        }
        added.sortByDescending { it.first.size }
    }

    /** ids for `text`, cut to maxLen with the special tokens (0: no cut). */
    fun encode(text: String, maxLen: Int): Encoding {
        val words = ArrayList<Long>()
        val cps = codePoints(text)
        val chunk = ArrayList<Int>()
        var i = 0
        while (i < cps.size) {
            val hit = added.firstOrNull { (tok, _) -> tok.isNotEmpty() && i + tok.size <= cps.size && (tok.indices).all { cps[i + it] == tok[it] } }
            if (hit == null) {
                chunk.add(cps[i++])
                continue
            }
            tokenize(chunk, words)
            chunk.clear()
            words.add(hit.second)
            i += hit.first.size
        }
        tokenize(chunk, words)
        val specials = head.size + tail.size
        val numTokens = words.size + specials
        val truncated = maxLen > 0 && numTokens > maxLen
        val kept = if (truncated) words.subList(0, maxOf(maxLen - specials, 0)) else words
        return Encoding((head + kept + tail).toLongArray(), numTokens, truncated)
    }

    private fun typeOf(o: JSONObject?): String = if (o == null) "none" else o.optString("type", "unknown")

    private fun readNormalizer(n: JSONObject?) {
        if (n == null || n.optString("type") != "BertNormalizer")
            throw IllegalArgumentException("the tokenizer's normalizer is ${typeOf(n)}; WordPiece reads BertNormalizer")
        fun flag(k: String, default: Boolean) = if (n.isNull(k)) default else n.getBoolean(k)
        clean = flag("clean_text", true)
        chinese = flag("handle_chinese_chars", true)
        lower = flag("lowercase", true)
        strip = flag("strip_accents", lower)  // null: follows lowercase, as in BERT
    }

    private fun readPostProcessor(p: JSONObject?) {
        when (typeOf(p)) {
            "BertProcessing" -> {
                head.add(p!!.getJSONArray("cls").getLong(1))
                tail.add(p.getJSONArray("sep").getLong(1))
            }
            "TemplateProcessing" -> {
                var seen = false
                val single = p!!.getJSONArray("single")
                for (k in 0 until single.length()) {
                    val piece = single.getJSONObject(k)
                    if (piece.has("Sequence")) {
                        seen = true
                        continue
                    }
                    val name = piece.getJSONObject("SpecialToken").getString("id")
                    val ids = p.getJSONObject("special_tokens").getJSONObject(name).getJSONArray("ids")
                    for (j in 0 until ids.length()) (if (seen) tail else head).add(ids.getLong(j))
                }
            }
            "none" -> {}
            else -> throw IllegalArgumentException("the tokenizer's post-processor is ${typeOf(p)}; WordPiece reads TemplateProcessing and BertProcessing")
        }
    }

    // BertNormalizer, one character at a time (as the Rust implementation maps characters).
    private fun normalize(input: List<Int>): List<Int> {
        val out = ArrayList<Int>(input.size)
        val stripped = ArrayList<Int>()
        for (c0 in input) {
            var c = c0
            if (clean && inRanges(UnicodeTables.removed, c)) continue
            if (clean && inRanges(UnicodeTables.space, c)) c = 0x20
            val han = chinese && inRanges(UnicodeTables.chinese, c)
            if (han) out.add(0x20)
            stripped.clear()
            if (strip && c >= 0xAC00 && c < 0xAC00 + 11172) {  // Hangul syllable: its jamo, by arithmetic
                val s = c - 0xAC00
                stripped.add(0x1100 + s / 588)
                stripped.add(0x1161 + (s % 588) / 28)
                if (s % 28 != 0) stripped.add(0x11A7 + s % 28)
            } else if (strip) {
                mapInto(UnicodeTables.strip, c, stripped)
            } else {
                stripped.add(c)
            }
            for (s in stripped) if (lower) mapInto(UnicodeTables.lower, s, out) else out.add(s)
            if (han) out.add(0x20)
        }
        return out
    }

    // Normalize, split into words (whitespace splits, punctuation stands alone), WordPiece each.
    private fun tokenize(raw: List<Int>, ids: MutableList<Long>) {
        if (raw.isEmpty()) return
        val word = ArrayList<Int>()
        for (c in normalize(raw)) {
            when {
                inRanges(UnicodeTables.split, c) -> piece(word, ids)
                inRanges(UnicodeTables.punct, c) -> {
                    piece(word, ids)
                    word.add(c)
                    piece(word, ids)
                }
                else -> word.add(c)
            }
        }
        piece(word, ids)
    }

    // Greedy longest-match-first WordPiece of one word (cleared after); [UNK] for a word with a
    // piece not in the vocabulary or more than max_input_chars_per_word characters.
    private fun piece(word: MutableList<Int>, ids: MutableList<Long>) {
        if (word.isEmpty()) return
        if (word.size > maxChars) {
            ids.add(unk)
            word.clear()
            return
        }
        val out = ArrayList<Long>()
        var start = 0
        while (start < word.size) {
            var end = word.size
            var found: Long? = null
            while (end > start) {
                val sub = StringBuilder(if (start > 0) prefix else "")
                for (k in start until end) sub.appendCodePoint(word[k])
                found = vocab[sub.toString()]
                if (found != null) break
                end--
            }
            if (found == null) {
                out.clear()
                out.add(unk)
                break
            }
            out.add(found)
            start = end
        }
        ids.addAll(out)
        word.clear()
    }

    private companion object {
        fun codePoints(s: String): IntArray =
            s.codePoints().map { if (it in 0xD800..0xDFFF) 0xFFFD else it }.toArray()

        // ranges: lo, hi pairs, sorted
        fun inRanges(ranges: IntArray, c: Int): Boolean {
            var lo = 0
            var hi = ranges.size / 2 - 1
            while (lo <= hi) {
                val mid = (lo + hi) ushr 1
                when {
                    c < ranges[2 * mid] -> hi = mid - 1
                    c > ranges[2 * mid + 1] -> lo = mid + 1
                    else -> return true
                }
            }
            return false
        }

        private val index = HashMap<IntArray, Map<Int, Int>>()  // a map table -> (code point -> its offset)

        // Appends the mapping of c (or c itself when it has none); table: code point, length, mapped...
        fun mapInto(table: IntArray, c: Int, out: MutableList<Int>) {
            val at = synchronized(index) {
                index.getOrPut(table) {
                    val m = HashMap<Int, Int>()
                    var k = 0
                    while (k < table.size) {
                        m[table[k]] = k
                        k += 2 + table[k + 1]
                    }
                    m
                }
            }[c]
            if (at == null) out.add(c) else for (j in 0 until table[at + 1]) out.add(table[at + 2 + j])
        }
    }
}
