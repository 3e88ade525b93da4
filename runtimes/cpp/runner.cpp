// edgeformer-runner: run an edgeformer artifact (model.pte + manifest.json) with the ExecuTorch
// C++ runtime, no Python. Verifies the .pte's sha256 against the manifest, runs the model,
// and prints one JSON object: outputs, latency p50/p90, peak RSS, and the device's fingerprint.
//
//   edgeformer-runner ARTIFACT [--inputs FILE.json] [--threads N] [--warmup N] [--iters N]
//                              [--text TEXT]... [--texts FILE] [--batch] [--tokenize-only]
//                              [--prompt-tokens N] [--max-new-tokens N] [--ignore-eos] [--no-outputs]
//
// Encoders: inputs are the manifest's [1, S] int64 tensors (input_ids, attention_mask), from
// --inputs {"input_ids": [...], "attention_mask": [...]} or seeded ids; the outputs of the
// last timed run are printed. With --text / --texts (one text per line) the artifact's
// tokenizer.json is read here (WordPiece, wordpiece.h): each text is tokenized and run once,
// timed together, and its label and score (classifiers) or embedding printed;
// --tokenize-only prints the ids without running the model. With --batch the texts go through the
// manifest's batch method instead, as `edgeformer run` does them: sorted by length, `size` per call,
// each call padded to its longest text (only that method loaded); texts per second are printed,
// results in input order. Causal LMs (manifest.generation): --inputs {"prompt_ids": [...]}
// (or --prompt-tokens seeded ids, default 128) is prefilled in chunks, then up to --max-new-tokens greedy tokens are
// decoded; it prints the ids, the first next-token logits, prefill and decode rates. Or the prompt as
// --text PROMPT, tokenized here with the artifact's byte-level BPE (bpe.h: GPT-2's scheme, SmolLM2's), and the
// generated text printed too; --tokenize-only prints the ids of each --text / --texts line.
//
// Exit codes: 0 ok, 2 bad arguments or artifact, 3 the runtime failed to load or run it.
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/core/hierarchical_allocator.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "bpe.h"
#include "json.h"
#include "sha256.h"
#include "wordpiece.h"

// The wheel ships libexecutorch_threadpool but not threadpool.h; these are its exported symbols.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

using executorch::extension::Module;
using executorch::extension::TensorPtr;
using executorch::runtime::EValue;
using executorch::runtime::Error;
namespace tp = executorch::extension::threadpool;

#ifndef EDGEFORMER_RUNNER_VERSION
#define EDGEFORMER_RUNNER_VERSION "dev"
#endif

namespace {

struct UserError {
  std::string msg;
};
struct RuntimeFailure {
  std::string msg;
};

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError{"cannot read " + path};
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

json::Value read_json(const std::string& path, const char* what) {
  try {
    return json::parse(read_file(path));
  } catch (const std::runtime_error& e) {
    throw UserError{path + " is not valid JSON (" + e.what() + "); " + what};
  }
}

double status_mb(const char* field) {  // VmRSS / VmHWM of this process, MiB
  std::ifstream f("/proc/self/status");
  std::string line;
  std::string key = std::string(field) + ":";
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::atof(line.c_str() + key.size()) / 1024.0;
  return -1;
}

// A method's planned memory (activations, KV cache) as fresh anonymous pages: zero, as a ring
// KV cache needs, and resident only once written. Module's own buffers are std::vectors, zeroed
// by writing every byte, so a 1024-token cache and prefill-sized activations were resident from
// load even when a call used a few rows (SmolLM2: ~90 MiB of 262).
class PlannedMemory {
 public:
  PlannedMemory() = default;
  executorch::runtime::HierarchicalAllocator* map(Module& m, const std::string& method) {
    auto meta = m.method_meta(method);
    if (!meta.ok()) throw RuntimeFailure{"the .pte has no method " + method};
    for (size_t i = 0; i < meta->num_memory_planned_buffers(); ++i) {
      size_t size = static_cast<size_t>(meta->memory_planned_buffer_size(i).get());
      void* p = size ? mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : nullptr;
      if (p == MAP_FAILED) throw RuntimeFailure{"cannot map " + std::to_string(size >> 20) + " MiB of planned memory"};
      maps_.emplace_back(p, size);
      spans_.emplace_back(static_cast<uint8_t*>(p), size);
    }
    allocator_ = std::make_unique<executorch::runtime::HierarchicalAllocator>(
        executorch::runtime::Span<executorch::runtime::Span<uint8_t>>(spans_.data(), spans_.size()));
    return allocator_.get();
  }
  ~PlannedMemory() {
    for (auto& [p, size] : maps_)
      if (p) munmap(p, size);
  }
  double mb() const {
    size_t total = 0;
    for (auto& m : maps_) total += m.second;
    return static_cast<double>(total) / (1 << 20);
  }
  PlannedMemory(const PlannedMemory&) = delete;
  PlannedMemory& operator=(const PlannedMemory&) = delete;

 private:
  std::vector<std::pair<void*, size_t>> maps_;
  std::vector<executorch::runtime::Span<uint8_t>> spans_;
  std::unique_ptr<executorch::runtime::HierarchicalAllocator> allocator_;
};

std::string first_line_with(const std::string& path, const std::string& prefix) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(prefix, 0) == 0) {
      auto c = line.find_first_of(":=");
      std::string v = c == std::string::npos ? "" : line.substr(c + 1);
      v.erase(0, v.find_first_not_of(" \t\""));
      while (!v.empty() && (v.back() == '"' || v.back() == ' ')) v.pop_back();
      return v;
    }
  return "";
}

std::string device_json() {
  utsname u{};
  uname(&u);
  std::string model;
  {
    std::ifstream dt("/proc/device-tree/model");  // a Raspberry Pi says which here
    if (dt) std::getline(dt, model, '\0');
  }
  if (model.empty()) model = first_line_with("/proc/cpuinfo", "model name");
  if (model.empty()) model = first_line_with("/proc/cpuinfo", "Model");
  if (model.empty()) model = first_line_with("/proc/cpuinfo", "Hardware");
  std::string os = first_line_with("/etc/os-release", "PRETTY_NAME");
  std::ostringstream o;
  o << "{\"machine\": " << json::quote(u.machine) << ", \"processor\": " << json::quote(model.empty() ? "unknown" : model)
    << ", \"cores\": " << sysconf(_SC_NPROCESSORS_ONLN) << ", \"system\": " << json::quote(os)
    << ", \"kernel\": " << json::quote(std::string(u.sysname) + " " + u.release) << "}";
  return o.str();
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

double percentile(std::vector<double> xs, double q) {
  if (xs.empty()) return 0;
  std::sort(xs.begin(), xs.end());
  long i = std::lround(q / 100.0 * (xs.size() - 1));
  return xs[std::min<size_t>(xs.size() - 1, std::max<long>(0, i))];
}

// Rows of the model's token table (older manifests: the tokenizer's count).
int64_t table_rows(const json::Value& mf) {
  return mf["model"].has("vocab_size") ? mf["model"]["vocab_size"].as_int() : mf["tokenizer"]["vocab_size"].as_int();
}

// ids the model's table has rows for (a tokenizer may count more: added tokens past the table)
int64_t model_vocab(const json::Value& mf) {
  return std::min(mf["tokenizer"]["vocab_size"].as_int(), table_rows(mf));
}

std::vector<int64_t> seeded_ids(size_t n, int64_t vocab) {  // deterministic, for timing only
  std::vector<int64_t> ids(n);
  uint64_t s = 0x9E3779B97F4A7C15ull;
  for (auto& id : ids) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    id = static_cast<int64_t>((s >> 33) % static_cast<uint64_t>(vocab));
  }
  return ids;
}

std::string floats_json(const float* p, size_t n) {
  std::ostringstream o;
  o << "[";
  char buf[32];
  for (size_t i = 0; i < n; ++i) {
    snprintf(buf, sizeof buf, "%.9g", p[i]);
    o << (i ? ", " : "") << buf;
  }
  return o.str() + "]";
}

template <typename T>
std::string list_json(const std::vector<T>& xs) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < xs.size(); ++i) o << (i ? ", " : "") << xs[i];
  return o.str() + "]";
}

std::string error_name(Error e) {
  char buf[16];
  snprintf(buf, sizeof buf, "0x%x", static_cast<unsigned>(e));
  switch (e) {
    case Error::OperatorMissing: return std::string(buf) + " OperatorMissing";
    case Error::NotFound: return std::string(buf) + " NotFound";
    case Error::InvalidProgram: return std::string(buf) + " InvalidProgram";
    case Error::MemoryAllocationFailed: return std::string(buf) + " MemoryAllocationFailed";
    case Error::InvalidArgument: return std::string(buf) + " InvalidArgument";
    default: return buf;
  }
}

std::vector<EValue> run(Module& m, const std::vector<TensorPtr>& inputs, const std::string& method = "forward") {
  std::vector<EValue> in;
  for (const auto& t : inputs) in.emplace_back(t);
  auto r = m.execute(method, in);
  if (!r.ok()) throw RuntimeFailure{method + " failed with error " + error_name(r.error())};
  return std::move(r.get());
}

struct Options {
  std::string artifact, inputs, texts_file;
  std::vector<std::string> texts;
  int threads = 2, warmup = -1, iters = -1, max_new_tokens = 32, prompt_tokens = 128;
  bool ignore_eos = false, outputs = true, tokenize_only = false, batch = false;
};

Options parse_args(int argc, char** argv) {
  Options o;
  auto need = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw UserError{std::string(argv[i]) + " needs a value"};
    return argv[++i];
  };
  auto number = [&](int& i, int lo) {
    std::string flag = argv[i], v = need(i);
    char* end = nullptr;
    long n = std::strtol(v.c_str(), &end, 10);
    if (*end || n < lo) throw UserError{flag + " " + v + " is not an integer >= " + std::to_string(lo)};
    return static_cast<int>(n);
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--inputs") o.inputs = need(i);
    else if (a == "--threads") o.threads = number(i, 1);
    else if (a == "--warmup") o.warmup = number(i, 0);
    else if (a == "--iters") o.iters = number(i, 1);
    else if (a == "--max-new-tokens") o.max_new_tokens = number(i, 1);
    else if (a == "--prompt-tokens") o.prompt_tokens = number(i, 1);
    else if (a == "--text") o.texts.push_back(need(i));
    else if (a == "--texts") o.texts_file = need(i);
    else if (a == "--tokenize-only") o.tokenize_only = true;
    else if (a == "--batch") o.batch = true;
    else if (a == "--ignore-eos") o.ignore_eos = true;
    else if (a == "--no-outputs") o.outputs = false;
    else if (a == "--version") { printf("edgeformer-runner %s\n", EDGEFORMER_RUNNER_VERSION); exit(0); }
    else if (!a.empty() && a[0] == '-') throw UserError{"unknown option " + a + "; see the usage in runner.cpp"};
    else if (o.artifact.empty()) o.artifact = a;
    else throw UserError{"one artifact only; got " + o.artifact + " and " + a};
  }
  if (o.artifact.empty()) throw UserError{"usage: edgeformer-runner ARTIFACT [--inputs FILE.json] [--threads N] "
                                          "[--warmup N] [--iters N] [--prompt-tokens N] [--max-new-tokens N] [--ignore-eos] [--no-outputs]"};
  return o;
}

// ---- text in: the artifact's own tokenizer ----

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError{"cannot read " + path + "; give a text file with one input per line"};
  std::vector<std::string> out;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) out.push_back(line);
  }
  if (out.empty()) throw UserError{path + " has no non-empty lines"};
  return out;
}

// The artifact's tokenizer.json as `Tok` (wordpiece.h or bpe.h); what it does not read is a
// UserError naming it, then `fix`.
template <class Tok>
Tok load_tokenizer(const std::string& dir, const json::Value& mf, const std::string& fix = "") {
  std::string path = dir + "/" + mf["tokenizer"]["file"].as_str();
  json::Value tj = read_json(path, "copy the whole artifact folder");
  try {
    return Tok(tj);
  } catch (const std::invalid_argument& e) {
    throw UserError{path + ": " + e.what() + fix};
  }
}

std::string ints_json(const std::vector<int64_t>& v) {
  std::ostringstream j;
  j << "[";
  for (size_t i = 0; i < v.size(); ++i) j << (i ? ", " : "") << v[i];
  j << "]";
  return j.str();
}

std::string tokens_json(const wordpiece::Encoding& e) {
  return "\"tokens\": " + std::to_string(e.num_tokens) + ", \"truncated\": " + (e.truncated ? "true" : "false");
}

// One text's JSON: its token count, then the label and score (a classifier's softmax) or the embedding.
std::string result_json(const json::Value& mf, const wordpiece::Encoding& e, const float* y, int64_t n) {
  std::ostringstream r;
  r << "{" << tokens_json(e);
  if (mf["model"]["task"].as_str() == "classifier") {
    const auto& labels = mf["model"]["labels"].arr;
    int64_t best = 0;
    double mx = *std::max_element(y, y + n), sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += std::exp(y[i] - mx);
    for (int64_t i = 1; i < n; ++i) best = y[i] > y[best] ? i : best;
    std::string label = best < static_cast<int64_t>(labels.size()) ? labels[best].as_str() : std::to_string(best);
    r << ", \"label\": " << json::quote(label) << ", \"score\": " << std::exp(y[best] - mx) / sum;
  } else {
    r << ", \"embedding\": " << floats_json(y, n);
  }
  r << "}";
  return r.str();
}

// `rows` texts (encodings in `chunk`, longest first) as [rows, S] ids and mask, S the longest (or
// the static shape's), then the last text repeated to `fill` rows; run through `method`.
std::vector<EValue> run_rows(Module& m, const std::string& method, const std::vector<const wordpiece::Encoding*>& chunk,
                             size_t fill, size_t static_len, int64_t pad) {
  size_t len = static_len ? static_len : chunk.front()->ids.size();
  std::vector<int64_t> ids(fill * len, pad), mask(fill * len, 0);
  for (size_t r = 0; r < fill; ++r) {
    const auto& e = *chunk[std::min(r, chunk.size() - 1)];
    std::copy(e.ids.begin(), e.ids.end(), ids.begin() + r * len);
    std::fill(mask.begin() + r * len, mask.begin() + r * len + e.ids.size(), 1);
  }
  std::vector<executorch::aten::SizesType> sizes{static_cast<executorch::aten::SizesType>(fill),
                                                  static_cast<executorch::aten::SizesType>(len)};
  return run(m, {executorch::extension::from_blob(ids.data(), sizes, executorch::aten::ScalarType::Long),
                executorch::extension::from_blob(mask.data(), sizes, executorch::aten::ScalarType::Long)}, method);
}

// --batch: every text tokenized, sorted by length (longest first), `size` per call of the batch
// method, a short last chunk filled with copies. Only the batch method is loaded (forward's
// packed weights would be a second copy in memory). Timed whole, tokenization included, after
// `warmup` untimed passes.
std::string run_texts_batched(Module& m, const json::Value& mf, const wordpiece::Tokenizer& tok,
                              const std::vector<std::string>& texts, const Options& o) {
  if (!mf.has("batch"))
    throw UserError{"--batch: this artifact's .pte has no batch method; rebuild it with edgeformer build --batch 8"};
  std::string method = mf["batch"]["method"].as_str();
  size_t size = static_cast<size_t>(mf["batch"]["size"].as_int());
  const auto& spec = mf["inputs"].arr.at(0);
  size_t max_len = static_cast<size_t>(spec["shape"].as_ints()[1]);
  size_t static_len = spec.has("min_shape") ? 0 : max_len;
  int64_t pad = mf["tokenizer"]["pad_id"].as_int();
  std::vector<wordpiece::Encoding> enc(texts.size());
  std::vector<std::string> results(texts.size());
  auto all = [&]() {
    for (size_t k = 0; k < texts.size(); ++k) enc[k] = tok.encode(texts[k], max_len);
    std::vector<size_t> order(texts.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return enc[a].ids.size() > enc[b].ids.size(); });
    for (size_t start = 0; start < order.size(); start += size) {
      std::vector<const wordpiece::Encoding*> chunk;
      for (size_t r = start; r < std::min(start + size, order.size()); ++r) chunk.push_back(&enc[order[r]]);
      auto out = run_rows(m, method, chunk, size, static_len, pad);
      const auto& t = out.at(0).toTensor();
      int64_t width = t.numel() / t.size(0);
      for (size_t r = 0; r < chunk.size(); ++r)
        results[order[start + r]] = result_json(mf, *chunk[r], t.const_data_ptr<float>() + r * width, width);
    }
  };
  int warmup = o.warmup < 0 ? 1 : o.warmup;
  for (int i = 0; i < warmup; ++i) all();
  auto t0 = std::chrono::steady_clock::now();
  all();
  double ms = ms_since(t0);
  std::ostringstream j;
  j << "\"kind\": \"encoder\", \"texts\": " << texts.size() << ", \"batch\": " << size << ", \"total_ms\": " << ms
    << ", \"texts_per_s\": " << texts.size() * 1000.0 / ms << ", \"ms_per_text\": " << ms / texts.size()
    << ", \"warmup\": " << warmup;
  if (o.outputs) {
    j << ", \"results\": [";
    for (size_t k = 0; k < results.size(); ++k) j << (k ? ", " : "") << results[k];
    j << "]";
  }
  return j.str();
}

// Each text tokenized, run once and timed with its tokenization (after `warmup` runs of the first).
std::string run_texts(Module& m, const json::Value& mf, const wordpiece::Tokenizer& tok, const std::vector<std::string>& texts,
                      const Options& o) {
  const auto& spec = mf["inputs"].arr.at(0);
  size_t max_len = static_cast<size_t>(spec["shape"].as_ints()[1]);
  bool any_length = spec.has("min_shape");
  int64_t pad = mf["tokenizer"]["pad_id"].as_int();
  auto once = [&](const std::string& text, wordpiece::Encoding& e) {
    e = tok.encode(text, max_len);
    size_t n = any_length ? e.ids.size() : max_len;
    std::vector<int64_t> ids(e.ids), mask(e.ids.size(), 1);
    ids.resize(n, pad);
    mask.resize(n, 0);
    std::vector<executorch::aten::SizesType> sizes{1, static_cast<executorch::aten::SizesType>(n)};
    auto t_ids = executorch::extension::from_blob(ids.data(), sizes, executorch::aten::ScalarType::Long);
    auto t_mask = executorch::extension::from_blob(mask.data(), sizes, executorch::aten::ScalarType::Long);
    return run(m, {t_ids, t_mask});
  };
  wordpiece::Encoding e;
  int warmup = o.warmup < 0 ? 3 : o.warmup;
  for (int i = 0; i < warmup; ++i) once(texts[0], e);
  std::vector<double> times;
  std::ostringstream results;
  for (size_t k = 0; k < texts.size(); ++k) {
    auto t0 = std::chrono::steady_clock::now();
    auto out = once(texts[k], e);
    const auto& t = out.at(0).toTensor();
    std::string r = result_json(mf, e, t.const_data_ptr<float>(), t.numel());
    times.push_back(ms_since(t0));
    if (o.outputs) results << (k ? ", " : "") << r;
  }
  double total = 0;
  for (double x : times) total += x;
  std::ostringstream j;
  j << "\"kind\": \"encoder\", \"texts\": " << texts.size() << ", \"latency_ms_p50\": " << percentile(times, 50)
    << ", \"latency_ms_p90\": " << percentile(times, 90) << ", \"latency_ms_mean\": " << total / times.size()
    << ", \"warmup\": " << warmup;
  if (o.outputs) j << ", \"results\": [" << results.str() << "]";
  return j.str();
}

std::string tokenize_only(const json::Value& mf, const wordpiece::Tokenizer& tok, const std::vector<std::string>& texts) {
  size_t max_len = static_cast<size_t>(mf["inputs"].arr.at(0)["shape"].as_ints()[1]);
  std::ostringstream j;
  j << "\"kind\": \"tokens\", \"results\": [";
  for (size_t k = 0; k < texts.size(); ++k) {
    auto e = tok.encode(texts[k], max_len);
    j << (k ? ", " : "") << "{\"ids\": " << ints_json(e.ids) << ", " << tokens_json(e) << "}";
  }
  j << "]";
  return j.str();
}

// Encoder: [1, S] inputs, `iters` timed runs. S is the manifest's shape[1], or, where the
// input has a min_shape (a .pte that takes any length), the length of the ids given.
std::string run_encoder(Module& m, const json::Value& mf, const json::Value& inputs, const Options& o) {
  std::vector<std::vector<int64_t>> data;
  std::vector<TensorPtr> tensors;
  int64_t vocab = model_vocab(mf);
  // One length for every input: the first one given (any length in range), else the shape's.
  int64_t length = -1;
  for (const auto& spec : mf["inputs"].arr) {
    const std::string& name = spec["name"].as_str();
    if (!spec.has("min_shape") || !inputs.has(name)) continue;
    int64_t lo = spec["min_shape"].as_ints()[1], hi = spec["shape"].as_ints()[1];
    int64_t given = static_cast<int64_t>(inputs[name].as_ints().size());
    if (given < lo || given > hi)
      throw UserError{"input " + name + " has " + std::to_string(given) + " tokens, the artifact takes " + std::to_string(lo) +
                      " to " + std::to_string(hi) + "; cut the ids or rebuild with a larger --seq-len"};
    if (length >= 0 && given != length)
      throw UserError{"input " + name + " has " + std::to_string(given) + " values and the one before it " +
                      std::to_string(length) + "; give ids and mask of one length"};
    length = given;
  }
  for (const auto& spec : mf["inputs"].arr) {
    auto shape = spec["shape"].as_ints();
    const std::string& name = spec["name"].as_str();
    if (spec.has("min_shape") && length >= 0) shape[1] = length;
    size_t n = 1;
    for (auto d : shape) n *= static_cast<size_t>(d);
    std::vector<int64_t> v;
    if (inputs.has(name)) v = inputs[name].as_ints();
    else v = name == "input_ids" ? seeded_ids(n, vocab) : std::vector<int64_t>(n, 1);
    if (v.size() != n) throw UserError{"input " + name + " has " + std::to_string(v.size()) + " values, the artifact takes " + std::to_string(n)};
    data.push_back(std::move(v));
    std::vector<executorch::aten::SizesType> sizes(shape.begin(), shape.end());
    tensors.push_back(executorch::extension::from_blob(data.back().data(), sizes, executorch::aten::ScalarType::Long));
  }
  int warmup = o.warmup < 0 ? 10 : o.warmup, iters = o.iters < 0 ? 50 : o.iters;
  for (int i = 0; i < warmup; ++i) run(m, tensors);
  std::vector<double> times;
  std::vector<EValue> out;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    out = run(m, tensors);
    times.push_back(ms_since(t0));
  }
  std::ostringstream j;
  j << "\"kind\": \"encoder\", \"latency_ms_p50\": " << percentile(times, 50) << ", \"latency_ms_p90\": " << percentile(times, 90)
    << ", \"latency_ms_min\": " << *std::min_element(times.begin(), times.end()) << ", \"iters\": " << iters
    << ", \"warmup\": " << warmup;
  if (o.outputs) {
    j << ", \"outputs\": [";
    for (size_t k = 0; k < out.size(); ++k) {
      const auto& t = out[k].toTensor();
      std::vector<int64_t> sizes(t.sizes().begin(), t.sizes().end());
      j << (k ? ", " : "") << "{\"name\": " << json::quote(mf["outputs"].arr.size() > k ? mf["outputs"].arr[k]["name"].as_str() : "output")
        << ", \"shape\": " << list_json(sizes) << ", \"data\": " << floats_json(t.const_data_ptr<float>(), t.numel()) << "}";
    }
    j << "]";
  }
  return j.str();
}

// Causal LM: chunked prefill, then greedy decode; `warmup` whole generations first. With `tok`
// (the prompt came as --text) the generated text is printed too.
std::string run_lm(Module& m, const json::Value& mf, const std::vector<int64_t>& prompt, const Options& o,
                   const bpe::Tokenizer* tok) {
  const auto& gen = mf["generation"];
  int64_t per_call = gen["max_tokens_per_call"].as_int();
  bool ring = gen["cache"].as_str() == "ring";
  int64_t context = ring ? 0 : gen["max_context"].as_int();  // a ring cache takes any length (max_context null)
  std::vector<int64_t> stop = gen.has("stop_ids") ? gen["stop_ids"].as_ints() : std::vector<int64_t>{};
  if (prompt.empty()) throw UserError{"prompt_ids is empty; give at least one token"};
  if (!ring && static_cast<int64_t>(prompt.size()) + o.max_new_tokens > context)
    throw UserError{std::to_string(prompt.size()) + " prompt + " + std::to_string(o.max_new_tokens) +
                    " new tokens exceed the artifact's max_context " + std::to_string(context) +
                    "; shorten the prompt or lower --max-new-tokens"};
  int64_t pos_value = 0;
  auto step = [&](const int64_t* ids, int64_t n, std::vector<float>* logits) {
    std::vector<int64_t> tok(ids, ids + n);
    std::vector<int64_t> pos{pos_value};
    auto t = executorch::extension::from_blob(tok.data(), {1, static_cast<int>(n)}, executorch::aten::ScalarType::Long);
    auto p = executorch::extension::from_blob(pos.data(), {1}, executorch::aten::ScalarType::Long);
    auto out = run(m, {t, p});
    pos_value += n;
    const auto& l = out[0].toTensor();
    const float* d = l.const_data_ptr<float>();
    int64_t vocab = l.size(l.dim() - 1);
    const float* last = d + (l.numel() - vocab);
    if (logits) logits->assign(last, last + vocab);
    return static_cast<int64_t>(std::max_element(last, last + vocab) - last);
  };
  int warmup = o.warmup < 0 ? 1 : o.warmup;
  double prefill_ms = 0;
  std::vector<double> decode_ms;
  std::vector<int64_t> generated;
  std::vector<float> first_logits;
  for (int run_i = 0; run_i <= warmup; ++run_i) {  // the last generation is the measured one
    pos_value = 0;
    generated.clear();
    decode_ms.clear();
    auto t0 = std::chrono::steady_clock::now();
    int64_t next = 0;
    for (size_t i = 0; i < prompt.size(); i += per_call) {
      int64_t n = std::min<int64_t>(per_call, prompt.size() - i);
      next = step(prompt.data() + i, n, i + n == prompt.size() ? &first_logits : nullptr);
    }
    prefill_ms = ms_since(t0);
    generated.push_back(next);
    while (static_cast<int>(generated.size()) < o.max_new_tokens) {
      if (!o.ignore_eos && std::find(stop.begin(), stop.end(), next) != stop.end()) break;
      auto t1 = std::chrono::steady_clock::now();
      next = step(&next, 1, nullptr);
      decode_ms.push_back(ms_since(t1));
      generated.push_back(next);
    }
  }
  double decode_total = 0;
  for (double t : decode_ms) decode_total += t;
  std::ostringstream j;
  j << "\"kind\": \"causal_lm\", \"prompt_tokens\": " << prompt.size() << ", \"generated_ids\": " << list_json(generated)
    << ", \"prefill_ms\": " << prefill_ms << ", \"prefill_tok_s\": " << prompt.size() / (prefill_ms / 1e3)
    << ", \"time_to_first_token_ms\": " << prefill_ms << ", \"decode_tokens\": " << decode_ms.size()
    << ", \"decode_tok_s\": " << (decode_ms.empty() ? 0.0 : decode_ms.size() / (decode_total / 1e3))
    << ", \"latency_ms_p50\": " << percentile(decode_ms, 50) << ", \"latency_ms_p90\": " << percentile(decode_ms, 90)
    << ", \"warmup\": " << warmup;
  if (tok) j << ", \"text\": " << json::quote(tok->decode(generated));
  if (o.outputs) j << ", \"first_logits\": " << floats_json(first_logits.data(), first_logits.size());
  return j.str();
}

void verify_sha256(const std::string& file, const std::string& expected) {
  std::string digest = sha256::file_hex(file);
  if (digest.empty()) throw UserError{"cannot read " + file + "; copy the whole artifact folder"};
  if (digest != expected)
    throw UserError{file + " sha256 " + digest.substr(0, 12) + "... does not match the manifest (" + expected.substr(0, 12) +
                    "...): the file was changed or damaged; copy it again"};
}

int main_impl(int argc, char** argv) {
  Options o = parse_args(argc, argv);
  std::string dir = o.artifact;
  json::Value mf = read_json(dir + "/manifest.json", "is this an edgeformer artifact folder? rebuild it with `edgeformer build`");
  if (mf["schema_version"].is_null() || mf["schema_version"].as_int() != 1)
    throw UserError{dir + "/manifest.json has an unknown schema_version; rebuild the artifact with this edgeformer"};
  std::string pte = dir + "/" + mf["pte"]["file"].as_str();
  // the data file, where the program has one: the weights it uses twice, stored once (model.ptd)
  std::string data = mf["pte"].has("data") ? dir + "/" + mf["pte"]["data"]["file"].as_str() : "";
  auto t_hash = std::chrono::steady_clock::now();
  verify_sha256(pte, mf["pte"]["sha256"].as_str());
  if (!data.empty()) verify_sha256(data, mf["pte"]["data"]["sha256"].as_str());
  double hash_ms = ms_since(t_hash);
  json::Value inputs;
  if (!o.inputs.empty()) inputs = read_json(o.inputs, "give a JSON object of integer lists");
  std::vector<std::string> texts = o.texts;
  if (!o.texts_file.empty()) {
    auto more = read_lines(o.texts_file);
    texts.insert(texts.end(), more.begin(), more.end());
  }
  if (o.tokenize_only && texts.empty()) throw UserError{"--tokenize-only needs --text or --texts"};
  std::unique_ptr<bpe::Tokenizer> lm_tok;  // a causal LM's prompt as text: byte-level BPE (bpe.h)
  if (mf.has("generation") && !texts.empty()) {
    if (o.batch) throw UserError{"--batch is for encoders; a causal LM takes one prompt"};
    lm_tok = std::make_unique<bpe::Tokenizer>(
        load_tokenizer<bpe::Tokenizer>(dir, mf, "; pass --inputs {\"prompt_ids\": [...]} (edgeformer run tokenizes it)"));
    if (o.tokenize_only) {
      std::ostringstream j;
      j << "\"kind\": \"tokens\", \"results\": [";
      for (size_t k = 0; k < texts.size(); ++k) j << (k ? ", " : "") << "{\"ids\": " << ints_json(lm_tok->encode(texts[k])) << "}";
      printf("{\"runner\": \"edgeformer-runner\", \"runner_version\": %s, %s]}\n", json::quote(EDGEFORMER_RUNNER_VERSION).c_str(),
             j.str().c_str());
      return 0;
    }
    if (texts.size() != 1 || !o.inputs.empty())
      throw UserError{"a causal LM takes one prompt: --text PROMPT, or --inputs {\"prompt_ids\": [...]}"};
  }
  if (o.batch && texts.empty()) throw UserError{"--batch runs texts: give --text or --texts"};
  if (!texts.empty() && !o.inputs.empty()) throw UserError{"give --inputs (token ids) or --text/--texts, not both"};
  std::unique_ptr<wordpiece::Tokenizer> tok;
  if (!texts.empty() && !lm_tok) tok = std::make_unique<wordpiece::Tokenizer>(load_tokenizer<wordpiece::Tokenizer>(dir, mf));
  if (o.tokenize_only) {
    printf("{\"runner\": \"edgeformer-runner\", \"runner_version\": %s, %s}\n", json::quote(EDGEFORMER_RUNNER_VERSION).c_str(),
           tokenize_only(mf, *tok, texts).c_str());
    return 0;
  }

  if (auto* pool = tp::get_threadpool()) pool->_unsafe_reset_threadpool(static_cast<uint32_t>(o.threads));
  double rss_before = status_mb("VmRSS");
  auto t_load = std::chrono::steady_clock::now();
  // Mmap: the .pte is mapped, not copied, as on a phone.
  PlannedMemory planned;  // before m: the method m owns must not outlive its memory
  auto owned = data.empty() ? std::make_unique<Module>(pte, Module::LoadMode::Mmap)
                            : std::make_unique<Module>(pte, data, Module::LoadMode::Mmap);
  Module& m = *owned;
  // --batch loads the batch method only (run_texts_batched checks the artifact has one)
  std::string method = o.batch && mf.has("batch") ? mf["batch"]["method"].as_str() : "forward";
  Error e = m.load_method(method, planned.map(m, method));
  if (e != Error::Ok)
    throw RuntimeFailure{"the ExecuTorch runtime could not load " + pte + " (error " + error_name(e) +
                         "); an operator it needs may be missing from this runner (see the log above)"};
  double load_ms = ms_since(t_load);
  std::vector<int64_t> prompt;  // a causal LM's: the --text prompt's ids, --inputs' or seeded ones
  if (mf.has("generation"))
    prompt = lm_tok ? lm_tok->encode(texts[0])
             : inputs.has("prompt_ids") ? inputs["prompt_ids"].as_ints()
                                        : seeded_ids(o.prompt_tokens, model_vocab(mf));
  int64_t rows = table_rows(mf);
  auto check_ids = [rows](const std::vector<int64_t>& ids, const std::string& what, const std::string& fix) {
    for (int64_t id : ids)  // an id past the token table aborts the gather kernel (SIGABRT, no message)
      if (id < 0 || id >= rows)
        throw UserError{what + " " + std::to_string(id) + " is outside the model's token table (0.." + std::to_string(rows - 1) +
                        "); " + fix};
  };
  check_ids(prompt, "prompt id", "its tokenizer adds tokens past the table: leave it out");
  if (!mf.has("generation") && inputs.has("input_ids"))
    check_ids(inputs["input_ids"].as_ints(), "input_ids has id", "give ids from the artifact's tokenizer.json, or --text");
  std::string body = mf.has("generation") ? run_lm(m, mf, prompt, o, lm_tok.get())
                     : tok ? (o.batch ? run_texts_batched(m, mf, *tok, texts, o) : run_texts(m, mf, *tok, texts, o))
                           : run_encoder(m, mf, inputs, o);
  double peak = status_mb("VmHWM");
  printf("{\"runner\": \"edgeformer-runner\", \"runner_version\": %s, \"artifact\": %s, \"sha256_verified\": true, "
         "\"hash_ms\": %.3f, \"load_ms\": %.3f, \"threads\": %d, %s, \"peak_rss_mb\": %.3f, "
         "\"runtime_baseline_rss_mb\": %.3f, \"model_memory_mb\": %.3f, \"planned_memory_mb\": %.3f, \"device\": %s}\n",
         json::quote(EDGEFORMER_RUNNER_VERSION).c_str(), json::quote(dir).c_str(), hash_ms, load_ms, o.threads, body.c_str(),
         peak, rss_before, peak - rss_before, planned.mb(), device_json().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return main_impl(argc, argv);
  } catch (const UserError& e) {
    fprintf(stderr, "error: %s\n", e.msg.c_str());
    return 2;
  } catch (const RuntimeFailure& e) {
    fprintf(stderr, "error: %s\n", e.msg.c_str());
    return 3;
  } catch (const std::exception& e) {  // a manifest field of the wrong type
    fprintf(stderr, "error: the manifest or inputs are not what this runner expects (%s); rebuild the artifact\n", e.what());
    return 2;
  }
}
