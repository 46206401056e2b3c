#include "train/data_build.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/progress.h"
#include "core/safetensors_writer.h"
#include "core/thread_pool.h"
#include "text/tokenizer.h"
#include "text/utf8.h"
#include "train/data_random.h"
#include "train/data_sha256.h"
#include "train/synthetic_tasks.h"

namespace dsa::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

// Streams of randomness, each from hash_pair(seed, stream).
constexpr uint64_t kHeldoutStream = 1;
constexpr uint64_t kSyntheticStream = 2;
constexpr uint64_t kOrderStream = 3;

struct InputFile {
  fs::path path;     // as found: the input, or input/relative
  std::string name;  // what the held-out hash reads: the path relative to its input
  size_t input = 0;  // index into options.inputs
};

struct Document {
  size_t file = 0;  // index into the files
  std::string text;
  Split split = Split::kTrain;
  std::vector<int32_t> tokens;  // without BOS
};

void validate(const DataBuildOptions& o) {
  if (o.inputs.empty()) fail("data build: no input (give .txt files or folders with -i)");
  if (o.tokenizer.empty()) fail("data build: no tokenizer (give --tokenizer tokenizer.json)");
  if (o.output.empty()) fail("data build: no output folder (give -o DIR)");
  if (!(o.heldout_fraction >= 0 && o.heldout_fraction < 1)) {
    fail("--heldout-fraction must be in [0, 1), got {}", o.heldout_fraction);
  }
  if (!(o.synthetic_ratio >= 0 && o.synthetic_ratio < 1)) {
    fail("--synthetic-ratio must be in [0, 1), got {}", o.synthetic_ratio);
  }
  if (o.synthetic_ratio > 0 && o.synthetic_lengths.empty()) {
    fail("--synthetic-lengths: give at least one length when --synthetic-ratio is positive");
  }
  for (int64_t length : o.synthetic_lengths) {
    if (length < 2)
      fail("--synthetic-lengths: each length must be at least 2 tokens, got {}", length);
  }
}

std::vector<InputFile> collect_files(const std::vector<fs::path>& inputs) {
  std::vector<InputFile> files;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const fs::path& input = inputs[i];
    std::error_code error;
    if (fs::is_regular_file(input, error)) {
      files.push_back({input, input.filename().generic_string(), i});
      continue;
    }
    if (!fs::is_directory(input, error)) fail("-i {}: no such file or folder", input.string());
    std::vector<InputFile> found;
    // Iterated with error codes: an unreadable subfolder is a user error, not an exception.
    // Symbolic links to folders are not followed (no loops); links to files are read.
    fs::recursive_directory_iterator it(input, error);
    for (; !error && it != fs::recursive_directory_iterator(); it.increment(error)) {
      std::error_code ignored;
      if (it->path().extension() != ".txt" || !it->is_regular_file(ignored)) continue;
      found.push_back({it->path(), it->path().lexically_relative(input).generic_string(), i});
    }
    if (error) fail("-i {}: cannot list the folder: {}", input.string(), error.message());
    if (found.empty()) fail("-i {}: the folder holds no .txt file", input.string());
    std::sort(found.begin(), found.end(),
              [](const InputFile& a, const InputFile& b) { return a.name < b.name; });
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open the file for reading", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("{}: error while reading the file", path.string());
  return text.str();
}

bool only_whitespace(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  });
}

// Held-out by hash; then the guarantees: one held-out document when the fraction is positive and
// there are two or more, one training document always.
void assign_splits(std::vector<Document>& docs, const std::vector<InputFile>& files,
                   const DataBuildOptions& o) {
  std::vector<double> u(docs.size());
  const uint64_t stream = hash_pair(o.seed, kHeldoutStream);
  for (size_t d = 0; d < docs.size(); ++d) {
    u[d] = double(hash_pair(stream, hash_text(files[docs[d].file].name)) >> 11) * 0x1.0p-53;
    docs[d].split = u[d] < o.heldout_fraction ? Split::kHeldout : Split::kTrain;
  }
  auto count = [&](Split split) {
    return std::count_if(docs.begin(), docs.end(),
                         [split](const Document& d) { return d.split == split; });
  };
  if (o.heldout_fraction > 0 && docs.size() >= 2 && count(Split::kHeldout) == 0) {
    docs[size_t(std::min_element(u.begin(), u.end()) - u.begin())].split = Split::kHeldout;
  }
  if (count(Split::kTrain) == 0) {
    docs[size_t(std::max_element(u.begin(), u.end()) - u.begin())].split = Split::kTrain;
  }
}

// Encodes every document on the pool, a slice of about 4 MiB at a time so that the progress bar
// moves; each document's tokens are its own, so the result does not depend on the thread count.
void encode_documents(std::vector<Document>& docs, const text::Tokenizer& tokenizer,
                      ThreadPool& pool) {
  uint64_t total = 0;
  for (const Document& d : docs) total += d.text.size();
  ProgressBar bar("encoding", total, ProgressUnit::kBytes);
  uint64_t done = 0;
  size_t begin = 0;
  while (begin < docs.size()) {
    size_t end = begin;
    uint64_t bytes = 0;
    while (end < docs.size() && (end == begin || bytes < (4u << 20)))
      bytes += docs[end++].text.size();
    pool.parallel_for(int64_t(end - begin), 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        Document& d = docs[begin + size_t(i)];
        d.tokens = tokenizer.encode(d.text, /*allow_special=*/false);
      }
    });
    done += bytes;
    bar.update(done);
    begin = end;
  }
  bar.finish();
}

DocumentKind document_kind(SyntheticKind kind) {
  switch (kind) {
    case SyntheticKind::kPasskey:
      return DocumentKind::kPasskey;
    case SyntheticKind::kKeyValueRecall:
      return DocumentKind::kKeyValueRecall;
    case SyntheticKind::kNeedle:
      return DocumentKind::kNeedle;
  }
  DSA_CHECK(false, "unknown synthetic kind {}", int(kind));
  return DocumentKind::kText;
}

struct SyntheticDocument {
  DocumentKind kind = DocumentKind::kText;
  int64_t length = 0;           // the requested length, BOS included
  std::vector<int32_t> tokens;  // without BOS
};

// Synthetic documents until they reach `budget` tokens (BOS included). Sample i has kind
// kinds[i % K] and length lengths[(i / K) % L], its seed and depth from (seed, i) alone; samples
// are made a batch at a time on the pool and taken in order, so the result does not depend on the
// thread count.
std::vector<SyntheticDocument> make_synthetic(const SyntheticTaskGenerator& generator,
                                              const std::vector<SyntheticKind>& kinds,
                                              const DataBuildOptions& o, int64_t budget,
                                              const text::Tokenizer& tokenizer, ThreadPool& pool) {
  std::vector<SyntheticDocument> out;
  if (budget <= 0) return out;
  ProgressBar bar("synthetic", uint64_t(budget), ProgressUnit::kItems);
  const uint64_t stream = hash_pair(o.seed, kSyntheticStream);
  const size_t batch = size_t(4 * pool.size());
  int64_t made = 0;
  for (uint64_t first = 0; made < budget; first += batch) {
    std::vector<SyntheticDocument> docs(batch);
    pool.parallel_for(int64_t(batch), 1, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) {
        const uint64_t i = first + uint64_t(j);
        const SyntheticKind kind = kinds[i % kinds.size()];
        const int64_t length = o.synthetic_lengths[(i / kinds.size()) % o.synthetic_lengths.size()];
        SplitMix64 rng(hash_pair(stream, i));
        const uint64_t sample_seed = rng.next();
        const double depth = rng.unit();
        SyntheticSample sample;
        try {
          sample = generator.generate(kind, length - 1, depth, sample_seed);  // - 1: the BOS
        } catch (const Error& error) {
          fail("--synthetic-lengths {}: {}", length, error.what());
        }
        docs[size_t(j)] = {document_kind(kind), length,
                           tokenizer.encode(sample.text(), /*allow_special=*/false)};
      }
    });
    for (SyntheticDocument& doc : docs) {
      if (made >= budget) break;
      DSA_CHECK(int64_t(doc.tokens.size()) + 1 <= doc.length,
                "synthetic document of {} tokens for a length of {}", doc.tokens.size() + 1,
                doc.length);
      made += int64_t(doc.tokens.size()) + 1;
      out.push_back(std::move(doc));
    }
    bar.update(uint64_t(std::min(made, budget)));
  }
  bar.finish();
  return out;
}

ordered_json kinds_json(const KindCount (&counts)[kDocumentKindCount]) {
  ordered_json kinds = ordered_json::object();
  for (int k = 0; k < kDocumentKindCount; ++k) {
    kinds[std::string(document_kind_name(DocumentKind(k)))] = {{"documents", counts[k].documents},
                                                               {"tokens", counts[k].tokens}};
  }
  return kinds;
}

void count_split(const SplitTokens& split, KindCount (&counts)[kDocumentKindCount]) {
  for (size_t d = 0; d < split.document_starts.size(); ++d) {
    const int64_t end = d + 1 < split.document_starts.size() ? split.document_starts[d + 1]
                                                             : int64_t(split.tokens.size());
    KindCount& c = counts[split.document_kinds[d]];
    c.documents += 1;
    c.tokens += end - split.document_starts[d];
  }
}

}  // namespace

KindCount DataBuildReport::total(Split split) const {
  KindCount sum;
  for (const KindCount& c : split == Split::kTrain ? train : heldout) {
    sum.documents += c.documents;
    sum.tokens += c.tokens;
  }
  return sum;
}

size_t first_invalid_utf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const size_t length = text::utf8_char_length(text, pos);
    if (length == 0) return pos;
    pos += length;
  }
  return std::string_view::npos;
}

DataBuildReport build_dataset(const DataBuildOptions& o) {
  validate(o);
  DataBuildReport report;
  const text::Tokenizer tokenizer = text::Tokenizer::from_file(o.tokenizer);
  const std::optional<int32_t> bos = tokenizer.bos_id();
  if (!bos) fail("{}: the tokenizer has no BOS token to separate documents", o.tokenizer.string());
  report.tokenizer_sha256 = sha256_file_hex(o.tokenizer);

  const std::vector<InputFile> files = collect_files(o.inputs);
  report.files = int64_t(files.size());
  std::vector<Document> docs;
  std::vector<int64_t> input_bytes(o.inputs.size(), 0);
  for (size_t f = 0; f < files.size(); ++f) {
    std::string text = read_file(files[f].path);
    if (text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);  // byte-order mark
    const size_t bad = first_invalid_utf8(text);
    if (bad != std::string_view::npos) {
      fail(
          "{}: invalid UTF-8 at byte offset {}; data build refuses broken text (convert the file, "
          "e.g. iconv -f latin1 -t utf-8, or remove it)",
          files[f].path.string(), bad);
    }
    if (only_whitespace(text)) {
      report.skipped.push_back(files[f].path);
      continue;
    }
    input_bytes[files[f].input] += int64_t(text.size());
    docs.push_back({f, std::move(text), Split::kTrain, {}});
  }
  if (docs.empty()) {
    fail("data build: no text: all {} input file(s) are empty (first: {})", files.size(),
         files.front().path.string());
  }
  assign_splits(docs, files, o);
  ThreadPool pool(o.threads);
  encode_documents(docs, tokenizer, pool);

  // Real documents first, in input order; then the synthetic ones; training is shuffled below.
  int64_t real_train_tokens = 0;
  std::vector<std::string> haystack;
  for (const Document& d : docs) {
    if (d.split != Split::kTrain) continue;
    real_train_tokens += int64_t(d.tokens.size()) + 1;
    if (o.synthetic_ratio > 0) {
      std::vector<std::string> sentences = split_sentences(d.text);
      haystack.insert(haystack.end(), std::make_move_iterator(sentences.begin()),
                      std::make_move_iterator(sentences.end()));
    }
  }
  const int64_t budget =
      int64_t(std::ceil(o.synthetic_ratio / (1 - o.synthetic_ratio) * double(real_train_tokens)));
  const SyntheticTaskGenerator generator(tokenizer, std::move(haystack));
  std::vector<SyntheticKind> kinds = {SyntheticKind::kPasskey, SyntheticKind::kKeyValueRecall};
  if (generator.haystack_size() > 0) kinds.push_back(SyntheticKind::kNeedle);
  const std::vector<SyntheticDocument> synthetic =
      make_synthetic(generator, kinds, o, budget, tokenizer, pool);

  // Training order: a shuffle of real and synthetic documents from the seed.
  struct Entry {
    const std::vector<int32_t>* tokens;
    DocumentKind kind;
  };
  std::vector<Entry> train_order;
  SplitTokens train, heldout;
  for (const Document& d : docs) {
    if (d.split == Split::kTrain) {
      train_order.push_back({&d.tokens, DocumentKind::kText});
    } else {
      heldout.append_document(*bos, d.tokens, DocumentKind::kText);
    }
  }
  for (const SyntheticDocument& s : synthetic) train_order.push_back({&s.tokens, s.kind});
  SplitMix64 rng(hash_pair(o.seed, kOrderStream));
  for (size_t i = train_order.size(); i > 1; --i) {
    std::swap(train_order[i - 1], train_order[size_t(rng.below(i))]);
  }
  for (const Entry& e : train_order) train.append_document(*bos, *e.tokens, e.kind);
  count_split(train, report.train);
  count_split(heldout, report.heldout);

  // data.json goes first, so that a failure below leaves no data set that opens.
  std::error_code error;
  fs::create_directories(o.output, error);
  if (error) fail("-o {}: cannot create the folder: {}", o.output.string(), error.message());
  fs::remove(o.output / kDataJsonName, error);
  if (error) fail("-o {}: cannot remove the old data.json: {}", o.output.string(), error.message());
  write_split_file(o.output / split_file_name(Split::kTrain), train);
  write_split_file(o.output / split_file_name(Split::kHeldout), heldout);

  ordered_json info = ordered_json::object();
  info["format"] = std::string(kDataFormatName);
  info["format_version"] = kDataFormatVersion;
  info["tokenizer"] = {{"file", o.tokenizer.string()},
                       {"sha256", report.tokenizer_sha256},
                       {"vocab_size", tokenizer.vocab_size()},
                       {"bos_id", *bos}};
  info["seed"] = o.seed;
  info["heldout_fraction"] = o.heldout_fraction;
  info["synthetic_ratio"] = o.synthetic_ratio;
  info["synthetic_lengths"] = o.synthetic_lengths;
  std::vector<std::string> kind_names;
  for (SyntheticKind k : kinds) kind_names.emplace_back(synthetic_kind_name(k));
  info["synthetic_kinds"] = kind_names;
  info["command"] = o.command;
  ordered_json splits = ordered_json::object();
  for (Split split : {Split::kTrain, Split::kHeldout}) {
    const KindCount total = report.total(split);
    splits[std::string(split_name(split))] = {
        {"file", split_file_name(split)},
        {"tokens", total.tokens},
        {"documents", total.documents},
        {"kinds", kinds_json(split == Split::kTrain ? report.train : report.heldout)}};
  }
  info["splits"] = splits;
  ordered_json sources = ordered_json::array();
  for (size_t i = 0; i < o.inputs.size(); ++i) {
    const auto n =
        std::count_if(files.begin(), files.end(), [i](const InputFile& f) { return f.input == i; });
    sources.push_back({{"input", o.inputs[i].string()}, {"files", n}, {"bytes", input_bytes[i]}});
  }
  info["sources"] = sources;
  ordered_json documents = ordered_json::array();
  for (const Document& d : docs) {
    documents.push_back({{"file", files[d.file].path.string()},
                         {"split", std::string(split_name(d.split))},
                         {"bytes", d.text.size()},
                         {"tokens", int64_t(d.tokens.size()) + 1}});
  }
  info["documents"] = documents;
  ordered_json skipped = ordered_json::array();
  for (const fs::path& p : report.skipped)
    skipped.push_back({{"file", p.string()}, {"reason", "empty"}});
  info["skipped"] = skipped;
  // A copy of the tokenizer makes the data set self-contained: `dsa train` ships it with the
  // model it trains (its sha256 is the one above).
  {
    std::ifstream in(o.tokenizer, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    if (!in.good() && !in.eof()) fail("cannot read the tokenizer {}", o.tokenizer.string());
    if (fs::absolute(o.tokenizer) != fs::absolute(o.output / "tokenizer.json")) {
      write_file_atomically(o.output / "tokenizer.json", text.str());
    }
  }
  write_file_atomically(o.output / kDataJsonName, info.dump(2) + "\n");
  return report;
}

}  // namespace dsa::train
