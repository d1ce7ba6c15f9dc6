#!/usr/bin/env node
// llama_ref.mjs — llama.cpp as the independent reference for our GGUF support: the same GGUF
// file through llama.cpp's own prebuilt CPU binaries (node-llama-cpp, installed by
// `make llama-ref` into .tools/llama-ref/), printing JSON on stdout.
//
//   node tests/tools/llama_ref.mjs logits   MODEL.gguf --tokens 1,2,3 [--out FILE] [common]
//   node tests/tools/llama_ref.mjs greedy   MODEL.gguf --tokens 1,2,3 --n 16 [--out FILE] [common]
//   node tests/tools/llama_ref.mjs greedy-batch JOBS.json [common]   (many greedy runs, one process)
//   node tests/tools/llama_ref.mjs tokenize MODEL.gguf (--text "..." | --text-file F | --texts-json F)
//                                                      [--special]
//   node tests/tools/llama_ref.mjs info     MODEL.gguf
//
//   common: --threads 2  --sequences 1  --kv f32|f16 (KV cache type; default f32)
//           --flash-attn off|on|auto (default off)  --verbose (llama.cpp's log on stderr)
//   env:    LLAMA_REF_DIR (default <repo>/.tools/llama-ref): where node-llama-cpp is installed
//
// logits: evaluates exactly the given token ids (no BOS is added, nothing is tokenized) in one
//   batch and reports the last position's raw logits over the whole vocabulary: `--out FILE`
//   gets them as float32 little-endian (vocab values), the JSON has vocab, argmax and top-5.
// greedy: n greedy ids after the prompt, each step's top-2 logit gap (so a comparison can
//   excuse near-ties); never stops at an end-of-generation id. `--out FILE` gets every step's
//   logits (n rows x vocab float32, the row that chose ids[i] is row i).
// tokenize: llama.cpp's tokenization without BOS (--special: special tokens in the text are
//   parsed as such). --texts-json takes a JSON array of strings and answers one list per string.
//   Two differences from Hugging Face's tokenizers that a cross-check must allow for: llama.cpp
//   parses added special tokens only with --special (HF always does), and it applies no
//   tokenizer.json normalizer (Qwen's NFC): text that is not in NFC tokenizes differently.
// Exit status: 0 done, 1 llama.cpp failed (its errors on stderr), 2 usage, 3 not installed.
//
// Why these defaults: fp32 KV and no flash attention keep llama.cpp's attention in fp32, as our
// CPU engine computes it, so the logits differ by the weights' arithmetic, not by a cache
// format; --kv f16 / --flash-attn auto give llama.cpp's own defaults.
//
// How the logits are known to be raw (pre-sampling, temperature-free): node-llama-cpp's
// LlamaContextSequence.controlledEvaluate with generateNext {logits: true} ends in the addon's
// AddonContext::sampleToken, which copies llama_get_logits_ith() into the candidate array
// (AddonSampler::setTokenCandidates: the "sampled" arrays are only set by backend samplers,
// which node-llama-cpp never attaches to a context) and applies the sampler chain before it
// reports the candidates' logits. With no sampling options that chain holds only the greedy
// sampler (no token bias, no repeat penalty, temperature 0 -> greedy: AddonSampler.cpp
// rebuildChainIfNeeded/applyConfig), and llama_sampler_greedy_apply only sets `selected`
// (llama.cpp src/llama-sampler.cpp). Checked numerically too: on tiny random qwen3, qwen2 and
// llama models (nexusctl model synth, f32, converted to GGUF) these logits match
// tests/ref_forward.py's float64 forward pass within 2.2e-7 of the largest |logit| (F32
// weights; F16 weights 2.5-4.5e-4, Q8_0 0.6-1.2e-2), they are not log-probabilities
// (logsumexp ~6.6), and passing temperature 0.5 doubles them: the default path is unscaled.
import fs from "fs";
import path from "path";
import { createRequire } from "module";
import { fileURLToPath, pathToFileURL } from "url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "..", "..");
export const refDir = process.env.LLAMA_REF_DIR || path.join(repoRoot, ".tools", "llama-ref");

export function fail(msg, code = 2) {
    process.stderr.write(`llama_ref: ${msg}\n`);
    process.exit(code);
}

// node-llama-cpp is ESM-only and lives outside this tree's module path: resolve it from the
// install folder's package.json, then import it by file URL.
export async function importNodeLlamaCpp() {
    const req = createRequire(path.join(refDir, "package.json"));
    let entry;
    try {
        entry = req.resolve("node-llama-cpp");
    } catch {
        fail(`node-llama-cpp is not installed in ${refDir} (run \`make llama-ref\`)`, 3);
    }
    const mod = await import(pathToFileURL(entry).href);
    const pkg = JSON.parse(fs.readFileSync(path.join(path.dirname(entry), "..", "package.json"), "utf8"));
    return { mod, version: pkg.version };
}

// getLlama with only the prebuilt CPU binaries (never a build, never a download). llama.cpp's
// log is captured: the line naming the ggml CPU variant it loaded is kept for `info` and the
// JSON; warnings and errors go to stderr. After start-up the log level drops to warn so that
// per-batch debug lines do not cost time.
export async function openLlama({ verbose = false, keepInfo = false } = {}) {
    const { mod, version } = await importNodeLlamaCpp();
    const { getLlama, LlamaLogLevel } = mod;
    const log = [];
    const logger = (level, message) => {
        const text = String(message).replace(/\s+$/, "");
        if (log.length < 5000)
            log.push({ level, text });
        if (verbose || level === LlamaLogLevel.error || level === LlamaLogLevel.fatal)
            process.stderr.write(`[llama.cpp ${level}] ${text}\n`);
    };
    const llama = await getLlama({
        gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
        progressLogs: false, maxThreads: 0, // 0: a context's `threads` is the count used
        logLevel: LlamaLogLevel.debug, logger,
    });
    // the addon hands log lines to JavaScript asynchronously: on a busy machine the backend's
    // line may come after getLlama has resolved
    const findBackend = () => log.find((l) => /loaded CPU backend from/.test(l.text));
    for (let i = 0; i < 200 && !findBackend(); i++)
        await new Promise((r) => setTimeout(r, 10));
    llama.logLevel = verbose || keepInfo ? LlamaLogLevel.info : LlamaLogLevel.warn;
    const backendLine = findBackend();
    const backendFile = backendLine ? backendLine.text.replace(/^.*loaded CPU backend from\s*/, "") : null;
    const variant = backendFile ? path.basename(backendFile).replace(/^libggml-cpu-?|\.so$/g, "") || "cpu" : null;
    return {
        mod, llama, log,
        about: {
            node_llama_cpp: version,
            llama_cpp_release: llama.llamaCppRelease?.release ?? null,
            build_type: llama.buildType,
            gpu: llama.gpu,
            cpu_backend: backendFile,
            cpu_variant: variant,
            system_info: llama.systemInfo?.trim() ?? null,
        },
    };
}

// Wait until llama.cpp's log has been quiet for 50 ms (at most 2 s): its lines reach
// JavaScript asynchronously, after the call that printed them may have returned.
export async function settleLog(log) {
    for (let i = 0, n = -1; i < 40 && n !== log.length; i++) {
        n = log.length;
        await new Promise((r) => setTimeout(r, 50));
    }
}

export function parseArgs(argv, spec) {
    // spec: name -> "string" | "int" | "bool"; positional arguments collected in order
    const out = { _: [] };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (!a.startsWith("--")) { out._.push(a); continue; }
        const key = a.slice(2);
        const kind = spec[key];
        if (!kind)
            fail(`unknown option ${a}`);
        if (kind === "bool") { out[key] = true; continue; }
        if (i + 1 >= argv.length)
            fail(`${a} needs a value`);
        const v = argv[++i];
        if (kind === "int") {
            if (!/^\d+$/.test(v))
                fail(`${a} wants a non-negative integer, not '${v}'`);
            out[key] = Number(v);
        } else out[key] = v;
    }
    return out;
}

export function parseIds(text, what = "--tokens") {
    if (text == null || text === "")
        fail(`${what} is required (comma-separated token ids)`);
    const ids = text.split(",").map((s) => s.trim());
    if (!ids.every((s) => /^\d+$/.test(s)))
        fail(`${what}: not a list of token ids: '${text}'`);
    return ids.map(Number);
}

export const roundUp = (n, m) => Math.ceil(n / m) * m;

export async function loadModel(llama, file, opts = {}) {
    if (!fs.existsSync(file))
        fail(`${file}: no such file`);
    return llama.loadModel({ modelPath: path.resolve(file), gpuLayers: 0, ...opts });
}

// A context with room for `tokens` positions in each of `sequences` sequences (node-llama-cpp's
// contextSize is per sequence), one batch for the whole prompt.
export async function makeContext(model, { tokens, threads, sequences = 1, kv = "f32", flashAttn = "off",
                                           batch = 0, performanceTracking = false }) {
    const contextSize = roundUp(Math.max(tokens + 8, 256), 256);
    const kvType = { f32: "F32", f16: "F16" }[kv];
    if (!kvType)
        fail(`--kv wants f32 or f16, not '${kv}'`);
    const fa = { off: false, on: true, auto: "auto" }[flashAttn];
    if (fa === undefined)
        fail(`--flash-attn wants off, on or auto, not '${flashAttn}'`);
    const ctx = await model.createContext({
        contextSize, sequences, threads,
        batchSize: Math.max(batch, Math.min(contextSize, Math.max(tokens, 512))),
        flashAttention: fa, performanceTracking,
        experimentalKvCacheKeyType: kvType, experimentalKvCacheValueType: kvType,
        ignoreMemorySafetyChecks: true,
    });
    return ctx;
}

// The full logits Map (sorted by value) into a Float32Array indexed by token id.
function logitsArray(map, vocab) {
    const out = new Float32Array(vocab).fill(NaN);
    for (const [id, v] of map)
        out[id] = v;
    for (let i = 0; i < vocab; i++)
        if (Number.isNaN(out[i]))
            fail(`llama.cpp returned no logit for token ${i} (of ${vocab})`);
    return out;
}

function topK(arr, k) {
    const idx = Array.from(arr.keys()).sort((a, b) => arr[b] - arr[a] || a - b).slice(0, k);
    return idx.map((i) => [i, arr[i]]);
}

function writeRows(file, rows) {
    const bytes = rows.reduce((s, r) => s + r.byteLength, 0);
    const buf = Buffer.alloc(bytes);
    let off = 0;
    for (const r of rows) { // float32 little-endian regardless of the host
        for (let i = 0; i < r.length; i++, off += 4)
            buf.writeFloatLE(r[i], off);
    }
    fs.writeFileSync(file, buf);
}

const commonSpec = { threads: "int", sequences: "int", kv: "string", "flash-attn": "string", verbose: "bool" };

function contextOptions(args, tokens) {
    return {
        tokens, threads: args.threads ?? 2, sequences: args.sequences ?? 1,
        kv: args.kv ?? "f32", flashAttn: args["flash-attn"] ?? "off",
    };
}

function settings(args) {
    return { threads: args.threads ?? 2, kv_type: args.kv ?? "f32", flash_attn: args["flash-attn"] ?? "off" };
}

async function cmdLogits(argv) {
    const args = parseArgs(argv, { ...commonSpec, tokens: "string", out: "string" });
    const [file] = args._;
    if (!file)
        fail("logits: MODEL.gguf is required");
    const ids = parseIds(args.tokens);
    const { llama, about } = await openLlama({ verbose: args.verbose });
    const model = await loadModel(llama, file);
    const ctx = await makeContext(model, contextOptions(args, ids.length));
    const seq = ctx.getSequence();
    const input = ids.map((id, i) => (i === ids.length - 1 ? [id, { generateNext: { logits: true } }] : id));
    const res = await seq.controlledEvaluate(input);
    const next = res[ids.length - 1]?.next;
    if (!next?.logits)
        fail("llama.cpp returned no logits for the last position");
    const vocab = next.logits.size;
    const logits = logitsArray(next.logits, vocab);
    if (args.out)
        writeRows(args.out, [logits]);
    const top5 = topK(logits, 5);
    let maxAbs = 0;
    for (const v of logits) maxAbs = Math.max(maxAbs, Math.abs(v));
    const out = {
        command: "logits", model: path.resolve(file), tokens: ids.length, vocab,
        argmax: top5[0][0], top5, max_abs_logit: maxAbs, out: args.out ? path.resolve(args.out) : null,
        format: "float32 little-endian, vocab values", ...settings(args), llama: about,
    };
    process.stdout.write(JSON.stringify(out) + "\n");
    await ctx.dispose();
    await model.dispose();
}

// n greedy steps after `ids` on an open llama: the JSON record `greedy` prints, and with `out`
// every step's logits written there (n rows x vocab float32).
async function greedyRun(llama, about, file, ids, n, out, args) {
    const model = await loadModel(llama, file);
    const ctx = await makeContext(model, contextOptions(args, ids.length + n));
    const seq = ctx.getSequence();
    // With out every step returns the whole vocabulary's logits; without it only the top 2
    // (the addon sorts the candidates; no vocabulary-sized Map crosses into JS).
    const want = { token: true, ...(out ? { logits: true } : { logits: { filter: { tokens: [], includeTop: 2 } } }) };
    const steps = [], rows = [];
    let feed = ids, vocab = null;
    for (let step = 0; step < n; step++) {
        const input = feed.map((id, i) => (i === feed.length - 1 ? [id, { generateNext: want }] : id));
        const res = await seq.controlledEvaluate(input);
        const next = res[feed.length - 1]?.next;
        if (!next?.logits)
            fail(`greedy: llama.cpp returned no logits at step ${step}`);
        let top2;
        if (out) {
            vocab = next.logits.size;
            const row = logitsArray(next.logits, vocab);
            rows.push(row);
            top2 = topK(row, 2);
        } else
            top2 = Array.from(next.logits.entries()).slice(0, 2);
        // the id is llama.cpp's own greedy pick (its first largest logit in id order)
        if (next.token == null)
            fail(`greedy: llama.cpp picked no token at step ${step}`);
        steps.push({ id: next.token, logit: top2[0][1], second_id: top2[1]?.[0] ?? null,
                     gap: top2.length > 1 ? top2[0][1] - top2[1][1] : null });
        feed = [next.token];
    }
    if (out)
        writeRows(out, rows);
    await ctx.dispose();
    await model.dispose();
    return {
        command: "greedy", model: path.resolve(file), prompt_tokens: ids.length, n,
        ids: steps.map((s) => s.id), gaps: steps.map((s) => s.gap), steps,
        vocab, out: out ? path.resolve(out) : null,
        format: out ? "float32 little-endian, n rows x vocab" : null, ...settings(args), llama: about,
    };
}

async function cmdGreedy(argv) {
    const args = parseArgs(argv, { ...commonSpec, tokens: "string", n: "int", out: "string" });
    const [file] = args._;
    if (!file)
        fail("greedy: MODEL.gguf is required");
    const ids = parseIds(args.tokens);
    const { llama, about } = await openLlama({ verbose: args.verbose });
    const out = await greedyRun(llama, about, file, ids, args.n ?? 16, args.out, args);
    process.stdout.write(JSON.stringify(out) + "\n");
}

// greedy-batch JOBS.json: [{"model": F, "tokens": [ids], "n": 16, "out": F or null}, ...], all
// in one process (starting node and llama.cpp's libraries is most of a small model's time);
// prints {"command": "greedy-batch", "results": [what greedy prints, per job]}.
async function cmdGreedyBatch(argv) {
    const args = parseArgs(argv, commonSpec);
    const [file] = args._;
    if (!file)
        fail("greedy-batch: JOBS.json is required");
    let jobs;
    try {
        jobs = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch (e) {
        fail(`greedy-batch: ${file}: ${e.message}`);
    }
    if (!Array.isArray(jobs) || jobs.length === 0)
        fail(`greedy-batch: ${file}: expected a non-empty JSON array of jobs`);
    const { llama, about } = await openLlama({ verbose: args.verbose });
    const results = [];
    for (const [i, job] of jobs.entries()) {
        if (typeof job?.model !== "string" || !Array.isArray(job.tokens) || job.tokens.length === 0)
            fail(`greedy-batch: job ${i}: wants "model" (a path) and "tokens" (a non-empty id list)`);
        results.push(await greedyRun(llama, about, job.model, parseIds(job.tokens.join(",")),
                                     job.n ?? 16, job.out ?? null, args));
    }
    // the answer passes 64 KiB: wait until the pipe has taken it all (main exits right after)
    const text = JSON.stringify({ command: "greedy-batch", llama: about,
                                  results: results.map(({ steps, llama, ...rest }) => rest) }) + "\n";
    await new Promise((resolve) => process.stdout.write(text, resolve));
}

async function cmdTokenize(argv) {
    const args = parseArgs(argv, { text: "string", "text-file": "string", "texts-json": "string",
                                   special: "bool", verbose: "bool" });
    const [file] = args._;
    if (!file)
        fail("tokenize: MODEL.gguf is required");
    const given = ["text", "text-file", "texts-json"].filter((k) => args[k] !== undefined);
    if (given.length !== 1)
        fail("tokenize: give exactly one of --text, --text-file, --texts-json");
    const { llama, about } = await openLlama({ verbose: args.verbose });
    const model = await loadModel(llama, file, { vocabOnly: true });
    const special = !!args.special;
    // LlamaModel.tokenize -> the addon's common_tokenize(vocab, text, add_special=false, special)
    const enc = (t) => (t === "" ? [] : Array.from(model.tokenize(t, special)));
    let out;
    if (args["texts-json"]) {
        const texts = JSON.parse(fs.readFileSync(args["texts-json"], "utf8"));
        if (!Array.isArray(texts) || !texts.every((t) => typeof t === "string"))
            fail("--texts-json: want a JSON array of strings");
        out = { command: "tokenize", model: path.resolve(file), special, add_bos: false,
                cases: texts.map(enc), llama: about };
    } else {
        const text = args.text ?? fs.readFileSync(args["text-file"], "utf8");
        const ids = enc(text);
        out = { command: "tokenize", model: path.resolve(file), special, add_bos: false,
                ids, n: ids.length, llama: about };
    }
    process.stdout.write(JSON.stringify(out) + "\n");
    await model.dispose();
}

async function cmdInfo(argv) {
    const args = parseArgs(argv, { verbose: "bool" });
    const [file] = args._;
    if (!file)
        fail("info: MODEL.gguf is required");
    const { llama, log, about } = await openLlama({ verbose: args.verbose, keepInfo: true });
    const from = log.length;
    const model = await loadModel(llama, file);
    await settleLog(log);
    // llama.cpp's own report while loading: "print_info: key = value" lines
    const printInfo = {};
    for (const { text } of log.slice(from)) {
        const m = /^print_info:\s*(.+?)\s*=\s*(.*)$/.exec(text);
        if (m && !(m[1] in printInfo))
            printInfo[m[1]] = m[2];
    }
    const md = model.fileInfo.metadata;
    const arch = md?.general?.architecture ?? null;
    const tokens = md?.tokenizer?.ggml?.tokens;
    const out = {
        command: "info", model: path.resolve(file),
        architecture: arch,
        description: model.typeDescription, // llama_model_desc: "<arch> <size> <file type>"
        vocab: Number(printInfo.n_vocab) || (Array.isArray(tokens) ? tokens.length : null),
        vocab_type: model.vocabularyType,
        n_ctx_train: model.trainContextSize,
        n_embd: model.embeddingVectorSize,
        layers: md?.[arch]?.block_count ?? null,
        model_size_bytes: model.size,
        parameters: Number(model._model.getTotalParameters()),
        file_type: printInfo["file type"] ?? null,
        gguf_version: model.fileInfo.version,
        bos: model.tokens.bos, eos: model.tokens.eos,
        print_info: printInfo,
        llama: about,
    };
    process.stdout.write(JSON.stringify(out) + "\n");
    await model.dispose();
}

const commands = { logits: cmdLogits, greedy: cmdGreedy, "greedy-batch": cmdGreedyBatch,
                   tokenize: cmdTokenize, info: cmdInfo };

async function main() {
    const [cmd, ...rest] = process.argv.slice(2);
    if (!commands[cmd]) {
        process.stderr.write("usage: llama_ref.mjs logits|greedy|greedy-batch|tokenize|info MODEL.gguf [options] " +
                             "(see the comment at the top of tests/tools/llama_ref.mjs)\n");
        process.exit(2);
    }
    await commands[cmd](rest);
    process.exit(0); // the addon's threads would otherwise keep node alive a while
}

if (process.argv[1] && pathToFileURL(path.resolve(process.argv[1])).href === import.meta.url)
    main().catch((e) => fail(process.env.LLAMA_REF_DEBUG ? e?.stack : e?.message ?? String(e), 1));
