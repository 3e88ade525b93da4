// Drop-in use of an edgeformer encoder artifact on Android through ExecuTorch's AAR
// (Gradle: implementation("org.pytorch:executorch-android:<the executorch version in manifest.json>")).
// Copy model.pte, tokenizer.json and manifest.json into app/src/main/assets/edgeformer/, and
// this file, WordPiece.kt and UnicodeTables.kt into the app's sources.
//
// The AAR's org.pytorch.executorch API it uses: Module.load(path), Tensor.fromBlob(long[], shape),
// EValue.from, module.forward(...)[0].toTensor().getDataAsFloatArray(), module.execute(method, ...).
// Compiled in the tests against stand-ins with those signatures (no Android SDK there); WordPiece
// is run on the JVM there, id for id against `tokenizers`.
package ai.edgeformer

import android.content.Context
import org.json.JSONObject
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import java.io.File
import java.security.MessageDigest

class EdgeformerModel(context: Context, assetDir: String = "edgeformer") {
    private val manifest: JSONObject
    private val module: Module
    val seqLen: Int
    val labels: List<String>
    private val tokenizer: WordPiece
    private val padId: Long
    private val anyLength: Boolean
    private val batchMethod: String?  // the .pte's batch method ([batchSize, S]), if it has one
    val batchSize: Int

    init {
        // Module.load needs a file path: copy the assets out once (the .pte is mapped from there).
        val dir = File(context.filesDir, assetDir).apply { mkdirs() }
        for (name in listOf("model.pte", "tokenizer.json", "manifest.json")) {
            val f = File(dir, name)
            if (!f.exists()) context.assets.open("$assetDir/$name").use { i -> f.outputStream().use { i.copyTo(it) } }
        }
        manifest = JSONObject(File(dir, "manifest.json").readText())
        val pte = File(dir, manifest.getJSONObject("pte").getString("file"))
        val want = manifest.getJSONObject("pte").getString("sha256")
        require(sha256(pte) == want) { "model.pte does not match manifest.json: copy the whole artifact again" }
        module = Module.load(pte.absolutePath)
        val input = manifest.getJSONArray("inputs").getJSONObject(0)
        seqLen = input.getJSONArray("shape").getInt(1)
        anyLength = input.has("min_shape")  // the .pte takes any length up to seqLen: no padding
        val l = manifest.getJSONObject("model").optJSONArray("labels")
        labels = if (l == null) emptyList() else List(l.length()) { l.getString(it) }
        tokenizer = WordPiece(JSONObject(File(dir, manifest.getJSONObject("tokenizer").getString("file")).readText()))
        padId = manifest.getJSONObject("tokenizer").optLong("pad_id", 0)
        val batch = manifest.optJSONObject("batch")
        batchMethod = batch?.getString("method")
        batchSize = batch?.getInt("size") ?: 1
    }

    /** The model's output for `text`: an L2-normalised embedding, or class logits (see `labels`). */
    fun run(text: String): FloatArray {
        val ids = encode(text)
        val n = if (anyLength) ids.size else seqLen
        val mask = LongArray(n) { if (it < ids.size) 1 else 0 }
        val padded = LongArray(n) { if (it < ids.size) ids[it] else padId }
        val shape = longArrayOf(1, n.toLong())
        val out = module.forward(EValue.from(Tensor.fromBlob(padded, shape)), EValue.from(Tensor.fromBlob(mask, shape)))
        return out[0].toTensor().dataAsFloatArray
    }

    /** Outputs for many texts, in their order: sorted by length, `batchSize` per call of the batch
     *  method, each call padded to its longest text and filled with copies of its last; a last group
     *  of at most batchSize / 2 texts runs one at a time (as edgeformer's Python and C++ runtimes do). */
    fun runBatch(texts: List<String>): List<FloatArray> {
        val encoded = texts.map { encode(it) }
        val order = encoded.indices.sortedByDescending { encoded[it].size }
        val out = arrayOfNulls<FloatArray>(texts.size)
        for (group in order.chunked(batchSize)) {
            if (batchMethod == null || group.size <= batchSize / 2) {
                for (i in group) out[i] = run(texts[i])
                continue
            }
            val n = if (anyLength) encoded[group[0]].size else seqLen
            val ids = LongArray(batchSize * n) { padId }
            val mask = LongArray(batchSize * n)
            for (r in 0 until batchSize) {
                val e = encoded[group[minOf(r, group.size - 1)]]
                for (j in e.indices) { ids[r * n + j] = e[j]; mask[r * n + j] = 1 }
            }
            val shape = longArrayOf(batchSize.toLong(), n.toLong())
            val y = module.execute(batchMethod, EValue.from(Tensor.fromBlob(ids, shape)), EValue.from(Tensor.fromBlob(mask, shape)))[0]
                .toTensor().dataAsFloatArray
            val width = y.size / batchSize
            group.forEachIndexed { r, i -> out[i] = y.copyOfRange(r * width, (r + 1) * width) }
        }
        return out.map { it!! }
    }

    /** The text's token ids: [CLS] ... [SEP], cut to seqLen, id for id what `tokenizers` gives (WordPiece.kt). */
    fun encode(text: String): LongArray = tokenizer.encode(text, seqLen).ids

    private fun sha256(f: File): String {
        val md = MessageDigest.getInstance("SHA-256")
        f.inputStream().use { i -> val buf = ByteArray(1 shl 16); while (true) { val n = i.read(buf); if (n < 0) break; md.update(buf, 0, n) } }
        return md.digest().joinToString("") { "%02x".format(it) }
    }
}
