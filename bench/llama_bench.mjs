#!/usr/bin/env node
// llama_bench.mjs — llama.cpp's speed on a GGUF file, the baseline our engine is measured
// against (bench/run_quant.sh runs both): prefill tokens/s of one prompt in one batch, decode
// tokens/s at batch 1 and the aggregate decode tokens/s of several sequences stepped together
// in one context, on llama.cpp's prebuilt CPU binaries (node-llama-cpp, `make llama-ref`).
//
//   node bench/llama_bench.mjs MODEL.gguf [--threads 2] [--prompt 128] [--tokens 32]
//        [--batches 1,8] [--decode-prompt 16] [--repeat 1] [--kv f16|f32]
//        [--flash-attn auto|on|off] [--json FILE] [--verbose] [--serve]
//
// JSON on stdout (and in --json FILE), shaped like bench/decode's: figures [{phase: prefill |
// decode, batch, tokens, steps, seconds, tokens_per_s, ...}], plus weight_bytes_per_step (the
// bytes of every weight tensor a decode step reads, sized by llama.cpp's own type table).
//
// What is timed: after the model is loaded and one untimed warm-up of every figure, each
// figure is the median of --repeat runs. Prefill: one sequence's --prompt tokens in one
// llama_decode (batch size >= the prompt), then its greedy pick. Decode at batch B: B
// sequences, each with its own --decode-prompt (untimed), then --tokens steps in which all B
// sequences' next tokens go into one llama_decode and each sequence gets its greedy pick, as
// bench/decode steps ours. KV cache and flash attention are llama.cpp's defaults (f16, auto).
//
// --serve: after the load and the warm-up, no figures: batch-1 bursts on demand, one command
// a line on stdin and one JSON line on stdout each, as `bench/decode --serve` answers them
// (bench/quant_pair.py interleaves the two engines' bursts): `decode N` (1 <= N <= --tokens,
// greedy steps of a fresh sequence after its untimed --decode-prompt), `quit`.
//
// Per-token JavaScript is kept out of the way by driving node-llama-cpp's addon directly
// (LlamaContext._ctx: initBatch / addToBatch / decodeBatch / sampleToken, the calls its own
// batch dispatcher makes), not LlamaContextSequence.evaluate with its per-token locks,
// sampler configuration and generators: a step is one batch, B addToBatch calls, one
// llama_decode on the addon's worker thread and B greedy picks in C++. The JSON reports how
// much of each figure was spent inside llama_decode (decode_seconds) so the rest, JavaScript
// and picks, is visible. That the B sequences go through one llama_decode per step is checked
// from llama.cpp's own counters (llama_perf_context): a B-token call counts B prompt-eval
// tokens, a 1-token call one eval run; batch_check in the JSON.
import fs from "fs";
import path from "path";
import readline from "readline";
import { fail, loadModel, makeContext, openLlama, parseArgs, settleLog } from "../tests/tools/llama_ref.mjs";
import { contextSettings, median, now, perfCounters, promptIds } from "./llama_common.mjs";

// Bytes of weights one decode step reads: every tensor, except that token_embd is a row
// lookup unless it is also the output head (no output.weight: tied embeddings).
function weightBytesPerStep(model, bindings) {
    const tensors = model.fileInfo.tensorInfo ?? [];
    const tied = !tensors.some((t) => t.name === "output.weight");
    let bytes = 0;
    for (const t of tensors) {
        if (t.name === "token_embd.weight" && !tied)
            continue;
        const typeSize = bindings.getTypeSizeForGgmlType(t.ggmlType);
        const blockSize = bindings.getBlockSizeForGgmlType(t.ggmlType);
        if (!typeSize || !blockSize)
            return null;
        const dims = t.dimensions.map(Number);
        const rows = dims.slice(1).reduce((a, b) => a * b, 1);
        bytes += (dims[0] / blockSize) * typeSize * rows;
    }
    return bytes;
}

class Runner {
    constructor(ctx, model, bindings, vocab, maxBatch) {
        this.raw = ctx._ctx; // the addon's context: see the comment at the top
        this.vocab = vocab;
        // one greedy sampler per sequence: the addon samples on worker threads, and a sampler
        // holds its candidate buffer, so concurrent picks must not share one
        this.samplers = Array.from({ length: maxBatch }, () => {
            const s = new bindings.AddonSampler(model._model);
            s.applyConfig({ temperature: 0 }); // temperature 0: the greedy sampler alone
            return s;
        });
        this.logitLast = new Uint32Array([0]);
    }

    clear(n) {
        for (let s = 0; s < n; s++)
            this.raw.disposeSequence(s); // llama_memory_seq_rm(seq, -1, -1)
    }

    async prefill(prompt) {
        this.clear(1);
        const ids = promptIds(prompt, this.vocab, 1);
        const t0 = now();
        this.raw.initBatch(prompt);
        const [logit] = this.raw.addToBatch(0, 0, ids, new Uint32Array([prompt - 1]));
        const td = now();
        await this.raw.decodeBatch();
        const decodeSeconds = now() - td;
        await this.raw.sampleToken(logit, this.samplers[0]);
        return { seconds: now() - t0, decode_seconds: decodeSeconds, tokens: prompt, steps: 1 };
    }

    async decode(batch, steps, decodePrompt) {
        this.clear(batch);
        const raw = this.raw;
        // untimed: every sequence's prompt in one batch, and the first picks
        raw.initBatch(batch * decodePrompt);
        const logits = new Array(batch);
        for (let s = 0; s < batch; s++)
            [logits[s]] = raw.addToBatch(s, 0, promptIds(decodePrompt, this.vocab, 100 + s),
                                         new Uint32Array([decodePrompt - 1]));
        await raw.decodeBatch();
        let next = await Promise.all(logits.map((l, s) => raw.sampleToken(l, this.samplers[s])));
        const one = new Uint32Array(1);
        let decodeSeconds = 0;
        const t0 = now();
        for (let step = 0, pos = decodePrompt; step < steps; step++, pos++) { // hot loop
            raw.initBatch(batch);
            for (let s = 0; s < batch; s++) {
                one[0] = next[s]; // addToBatch copies the ids into the llama_batch
                [logits[s]] = raw.addToBatch(s, pos, one, this.logitLast);
            }
            const td = now();
            await raw.decodeBatch();
            decodeSeconds += now() - td;
            next = await Promise.all(logits.map((l, s) => raw.sampleToken(l, this.samplers[s])));
        }
        return { seconds: now() - t0, decode_seconds: decodeSeconds, tokens: steps * batch, steps };
    }

    dispose() {
        for (const s of this.samplers)
            s.dispose();
    }
}

async function main() {
    const args = parseArgs(process.argv.slice(2), {
        threads: "int", prompt: "int", tokens: "int", batches: "string", "decode-prompt": "int",
        repeat: "int", kv: "string", "flash-attn": "string", json: "string", verbose: "bool",
        serve: "bool",
    });
    const [file] = args._;
    if (!file)
        fail("usage: llama_bench.mjs MODEL.gguf [--threads 2] [--prompt 128] [--tokens 32] [--batches 1,8] ...");
    const threads = args.threads ?? 2, prompt = args.prompt ?? 128, tokens = args.tokens ?? 32;
    const decodePrompt = args["decode-prompt"] ?? 16, repeat = Math.max(1, args.repeat ?? 1);
    const batches = (args.batches ?? "1,8").split(",").map(Number);
    if (!batches.every((b) => Number.isInteger(b) && b > 0) || prompt < 1 || tokens < 1 || decodePrompt < 1)
        fail("--batches wants positive integers (1,8); --prompt, --tokens, --decode-prompt >= 1");
    const kv = args.kv ?? "f16", flashAttn = args["flash-attn"] ?? "auto";

    const { llama, log, about } = await openLlama({ verbose: args.verbose, keepInfo: true });
    const t0 = now();
    const model = await loadModel(llama, file);
    const maxBatch = Math.max(...batches);
    const warmSteps = 4;
    const ctx = await makeContext(model, {
        tokens: Math.max(prompt, decodePrompt + Math.max(tokens, warmSteps)), threads, sequences: maxBatch,
        kv, flashAttn, batch: Math.max(prompt, maxBatch * decodePrompt), performanceTracking: true,
    });
    const loadSeconds = now() - t0;
    await settleLog(log);
    const settingsFromLog = contextSettings(log);
    const raw = ctx._ctx;
    raw.setThreads(threads); // the addon's value; LlamaContext's dispatcher is not used
    if (raw.getThreads() !== threads)
        fail(`llama.cpp uses ${raw.getThreads()} threads, not ${threads}`);
    const vocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length;
    if (!vocab)
        fail("cannot tell the vocabulary size from the GGUF metadata");
    const bindings = llama._bindings;
    const runner = new Runner(ctx, model, bindings, vocab, maxBatch);

    // warm-up: every figure once, untimed (first-touch of the weights, graph allocation)
    await runner.prefill(prompt);
    for (const b of batches)
        await runner.decode(b, warmSteps, decodePrompt);

    if (args.serve) {
        await serve(runner, tokens, decodePrompt, {
            model: path.resolve(file), description: model.typeDescription, threads,
            weight_bytes_per_step: weightBytesPerStep(model, bindings), max_tokens: tokens, llama: about,
        });
        runner.dispose();
        await ctx.dispose();
        await model.dispose();
        process.exit(0);
    }

    // Each timed run between two reads of llama.cpp's counters (outside the timing), checked
    // against the llama_decode calls the run should have made: llama.cpp counts a 1-token call
    // as an eval run and a longer one as prompt-eval tokens (llama-context.cpp). Prefill: one
    // call of P tokens. Decode at batch B: one of B x decode-prompt tokens, then one of B
    // tokens per step (B one-token calls per step would count as B eval runs instead).
    const measure = async (phase, batch, calls, run) => {
        const runs = [];
        let check = null;
        for (let r = 0; r < repeat; r++) {
            await perfCounters(raw, log); // reset
            runs.push(await run());
            const c = await perfCounters(raw, log);
            const want = { prompt_eval_tokens: Math.max(1, calls.filter((n) => n > 1).reduce((a, n) => a + n, 0)),
                           eval_runs: Math.max(1, calls.filter((n) => n === 1).length) };
            check = { ...c, expected: want, one_decode_per_step: c.prompt_eval_tokens == null ? null // no log
                : c.prompt_eval_tokens === want.prompt_eval_tokens && c.eval_runs === want.eval_runs };
        }
        return { ...summarize(phase, batch, runs), batch_check: check };
    };
    const figures = [await measure("prefill", 1, [prompt], () => runner.prefill(prompt))];
    for (const b of batches)
        figures.push(await measure("decode", b, [b * decodePrompt, ...Array(tokens).fill(b)],
                                   () => runner.decode(b, tokens, decodePrompt)));
    runner.dispose();

    const out = {
        tool: "llama.cpp", model: path.resolve(file), description: model.typeDescription,
        threads, prompt, tokens, decode_prompt: decodePrompt, repeat, kv_type: kv, flash_attn: flashAttn,
        context: settingsFromLog, vocab, load_seconds: loadSeconds,
        model_size_bytes: model.size, weight_bytes_per_step: weightBytesPerStep(model, bindings),
        figures, llama: about,
    };
    const text = JSON.stringify(out, null, 1);
    if (args.json)
        fs.writeFileSync(args.json, text + "\n");
    process.stdout.write(text + "\n");
    for (const f of figures)
        process.stderr.write(`llama.cpp ${f.phase} batch ${f.batch}: ${f.tokens_per_s.toFixed(1)} tok/s ` +
                             `(${(100 * f.decode_seconds / f.seconds).toFixed(0)}% inside llama_decode)\n`);
    await ctx.dispose();
    await model.dispose();
    process.exit(0);
}

// --serve's loop (see the comment at the top); a bad command answers {error} and the loop
// goes on.
async function serve(runner, maxTokens, decodePrompt, ready) {
    const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
    say({ ready: true, ...ready });
    const lines = readline.createInterface({ input: process.stdin, terminal: false });
    for await (const line of lines) {
        const words = line.trim().split(/\s+/);
        if (words.length === 1 && words[0] === "quit")
            break;
        const n = Number(words[1]);
        if (words.length === 2 && words[0] === "decode" && Number.isInteger(n) && n >= 1 && n <= maxTokens) {
            const faults = process.resourceUsage().majorPageFault;
            const r = await runner.decode(1, n, decodePrompt);
            say({ op: "decode", tokens: r.tokens, seconds: r.seconds, decode_seconds: r.decode_seconds,
                  tokens_per_s: r.tokens / r.seconds, major_faults: process.resourceUsage().majorPageFault - faults });
        } else {
            say({ error: `unknown command '${line.trim().slice(0, 60)}' (decode N with 1 <= N <= ${maxTokens}, quit)` });
        }
    }
    lines.close();
}

function summarize(phase, batch, runs) {
    const seconds = median(runs.map((r) => r.seconds));
    const decodeSeconds = median(runs.map((r) => r.decode_seconds));
    const { tokens, steps } = runs[0];
    return { phase, batch, tokens, steps, seconds, decode_seconds: decodeSeconds, tokens_per_s: tokens / seconds,
             runs: runs.map((r) => r.tokens / r.seconds) };
}

main().catch((e) => fail(process.env.LLAMA_REF_DEBUG ? e?.stack : e?.message ?? String(e), 1));
