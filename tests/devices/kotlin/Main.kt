// The tests' driver for WordPiece.kt on the JVM: tokenizer.json, a length and a file of texts (one
// per line, UTF-8) in; one JSON object per text out, as the C++ runner's --tokenize-only prints them.
import ai.edgeformer.WordPiece
import org.json.JSONObject
import java.io.File

fun main(args: Array<String>) {
    val tok = WordPiece(JSONObject(File(args[0]).readText()))
    val out = StringBuilder()
    for (line in File(args[2]).readLines()) {
        val e = tok.encode(line, args[1].toInt())
        out.append("{\"ids\": [${e.ids.joinToString(", ")}], \"tokens\": ${e.numTokens}, \"truncated\": ${e.truncated}}\n")
    }
    print(out)
}
