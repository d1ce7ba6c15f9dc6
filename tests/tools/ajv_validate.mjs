#!/usr/bin/env node
// ajv_validate.mjs — ajv (with ajv-formats; installed by `make ajv` into .tools/ajv/) as an
// independent JSON Schema validator for the grammar tests: one node process for many checks.
// Reads JSON lines {"schema": S, "instance": I} from stdin and prints one JSON line per input
// line, in order: {"valid": true} or {"valid": false, "errors": "..."}, or {"error": "..."}
// when the schema does not compile under ajv. The draft is the schema's "$schema" (draft-07)
// or 2020-12. Formats are asserted (ajv-formats), as the grammar asserts them.
//
//   node tests/tools/ajv_validate.mjs < lines.jsonl
//
// env: AJV_DIR (default <repo>/.tools/ajv). Exit status: 0 done, 3 not installed.
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const dir = process.env.AJV_DIR || path.join(here, "..", "..", ".tools", "ajv");
if (!existsSync(path.join(dir, "node_modules", "ajv", "package.json")) ||
    !existsSync(path.join(dir, "node_modules", "ajv-formats", "package.json"))) {
  console.error(`ajv_validate: ajv is not installed in ${dir} (make ajv)`);
  process.exit(3);
}
const require = createRequire(path.join(dir, "package.json"));
const Ajv07 = require("ajv").default;
const Ajv2020 = require("ajv/dist/2020").default;
const addFormats = require("ajv-formats").default;

function make(Cls) {
  // strict: false — schemas may carry keywords ajv's strict mode flags (e.g. unknown
  // annotations); the verdict on instances is what is compared.
  const ajv = new Cls({ strict: false, allErrors: false, validateFormats: true });
  addFormats(ajv);
  return ajv;
}
const validators = { "07": make(Ajv07), "2020": make(Ajv2020) };
const compiled = new Map(); // schema text -> validate function (or an Error)

function validatorFor(schema) {
  const key = JSON.stringify(schema);
  if (!compiled.has(key)) {
    const uri = schema && typeof schema === "object" ? schema.$schema || "" : "";
    const ajv = validators[uri.includes("draft-07") ? "07" : "2020"];
    try {
      compiled.set(key, ajv.compile(schema));
    } catch (e) {
      compiled.set(key, e);
    }
  }
  return compiled.get(key);
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (!line.trim())
    continue;
  let out;
  try {
    const { schema, instance } = JSON.parse(line);
    const v = validatorFor(schema);
    if (v instanceof Error)
      out = { error: `schema does not compile under ajv: ${v.message}` };
    else if (v(instance))
      out = { valid: true };
    else
      out = { valid: false, errors: v.errors.map((e) => `${e.instancePath} ${e.message}`).join("; ") };
  } catch (e) {
    out = { error: String(e && e.message || e) };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}
