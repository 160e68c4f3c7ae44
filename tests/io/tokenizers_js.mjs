// The reference side of the tokenizer tests: Tokenizers.js (npm @huggingface/tokenizers) encodes a text file with
// a tokenizer.json and prints JSON {ids, ids_special, decoded}: ids without and with the post-processor's special
// tokens, and the ids decoded back with special tokens skipped.
// Usage: node tokenizers_js.mjs TOKENIZERS_JS_DIST_MJS TOKENIZER_DIR TEXT_FILE
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [dist, dir, textFile] = process.argv.slice(2);
const { Tokenizer } = await import(pathToFileURL(dist).href);
const readJson = (name) => JSON.parse(readFileSync(`${dir}/${name}`, "utf8"));
let config = {};
try {
  config = readJson("tokenizer_config.json");
} catch {
  // no tokenizer_config.json: Tokenizers.js runs on tokenizer.json alone
}
const tokenizer = new Tokenizer(readJson("tokenizer.json"), config);
const text = readFileSync(textFile, "utf8");
const ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
const idsSpecial = tokenizer.encode(text, { add_special_tokens: true }).ids;
const decoded = tokenizer.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
process.stdout.write(JSON.stringify({ ids, ids_special: idsSpecial, decoded }));
