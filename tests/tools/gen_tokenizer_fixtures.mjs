// gen_tokenizer_fixtures.mjs — write the expected ids and chat renderings the tokenizer tests
// compare against, computed by the reference JavaScript implementations:
//   @lenml/tokenizers (transformers.js's tokenizers) encodes every corpus case with each
//   tokenizer in FIXTURES/<name>/ (add_special_tokens false: no BOS from a post-processor);
//   @huggingface/jinja renders each tokenizer's own chat_template (the Jinja engine
//   transformers.js uses; the copy bundled in @lenml/tokenizers cannot parse Qwen3's template).
// Run by gen_tokenizer_fixtures.sh with NODE_PATH pointing at a temporary node_modules.
import fs from "fs";
import path from "path";
import zlib from "zlib";
import { createRequire } from "module";

const require = createRequire(path.join(process.env.NODE_PATH, "x.js"));
const { TokenizerLoader } = require("@lenml/tokenizers");
const { Template } = require("@huggingface/jinja");

const fixtures = process.argv[2];
const names = process.argv.slice(3);
const corpus = JSON.parse(fs.readFileSync(path.join(fixtures, "corpus.json"), "utf8"));
const version = (pkg) =>
  JSON.parse(fs.readFileSync(path.join(process.env.NODE_PATH, pkg, "package.json"), "utf8")).version;

function readTokenizerJSON(dir) {
  const plain = path.join(dir, "tokenizer.json");
  if (fs.existsSync(plain)) return JSON.parse(fs.readFileSync(plain, "utf8"));
  return JSON.parse(zlib.gunzipSync(fs.readFileSync(plain + ".gz")).toString("utf8"));
}

const chatCases = [
  { messages: [{ role: "user", content: "hi" }], add_generation_prompt: true, thinking: -1 },
  { messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "What is 2+2?" }],
    add_generation_prompt: true, thinking: -1 },
  { messages: [{ role: "system", content: "You are a helpful assistant." }, { role: "user", content: "Hello 你好 👋" }],
    add_generation_prompt: true, thinking: 0 },
  { messages: [{ role: "user", content: "Think about it." }], add_generation_prompt: true, thinking: 1 },
  { messages: [{ role: "user", content: "first" }, { role: "assistant", content: "answer one" },
               { role: "user", content: "second\nline" }], add_generation_prompt: true, thinking: 0 },
  { messages: [{ role: "user", content: "no prompt after" }], add_generation_prompt: false, thinking: -1 },
];

const tokenToString = (t) => (t && typeof t === "object" ? t.content : t) ?? "";

const chat = [];
for (const name of names) {
  const dir = path.join(fixtures, name);
  const config = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON: readTokenizerJSON(dir), tokenizerConfig: config });
  const cases = corpus.map((text) => Array.from(tok.encode(text, { add_special_tokens: false })));
  const out = { tokenizer: name, reference: `@lenml/tokenizers ${version("@lenml/tokenizers")}`,
                add_special_tokens: false, cases };
  fs.writeFileSync(path.join(fixtures, `${name}_expected.json`), JSON.stringify(out) + "\n");
  console.log(`${name}: ${cases.length} cases, ${cases.reduce((n, c) => n + c.length, 0)} ids`);

  if (typeof config.chat_template !== "string") continue;
  const template = new Template(config.chat_template);
  for (const c of chatCases) {
    const vars = { messages: c.messages, add_generation_prompt: c.add_generation_prompt,
                   bos_token: tokenToString(config.bos_token), eos_token: tokenToString(config.eos_token) };
    if (c.thinking >= 0) vars.enable_thinking = c.thinking === 1;
    const text = template.render(vars);
    const ids = Array.from(tok.encode(text, { add_special_tokens: false }));
    chat.push({ tokenizer: name, ...c, text, ids });
  }
}
fs.writeFileSync(path.join(fixtures, "chat_expected.json"),
  JSON.stringify({ reference: `@huggingface/jinja ${version("@huggingface/jinja")}`, cases: chat }, null, 1) + "\n");
console.log(`chat: ${chat.length} renderings`);
