#!/usr/bin/env node
// llama_grammar.mjs — llama.cpp's own cost of JSON-schema constrained decoding, the baseline
// for bench/grammar_decode.c (bench/run_grammar_llama.sh runs both): decode tokens/s of
// sequences generating under node-llama-cpp's JSON-schema grammar
// (llama.createGrammarForJsonSchema: the schema as GBNF, run by llama.cpp's grammar sampler)
// against the same sequences unconstrained, at batch 1 and 8, with the ratio.
//
//   node bench/llama_grammar.mjs MODEL.gguf --schema FILE [--threads 2] [--tokens 32]
//        [--batches 1,8] [--rounds 2] [--json FILE] [--verbose]
//
// The loop is grammar_decode.c's, step for step: B sequences, each with a 16-token prompt
// (untimed, with the first pick), then --tokens timed steps in which every sequence's next
// token goes into one llama_decode and each sequence samples its next token. Sampling is at
// temperature 1 with seed 7 + sequence, no top-k, top-p or min-p (ours: nx_sampling_default
// with temperature 1), through the addon's own sampler (AddonSampler: llama_sampler_dist), so
// the grammar path is the one node-llama-cpp users get: sample from the whole distribution,
// test that one token against the grammar, and only when it is rejected run the grammar over
// every candidate and sample again (AddonSampler::sampleAndReleaseLock); the picked token is
// then accepted into the grammar state. A sequence that picks an end-of-generation token (the
// only choice once the JSON is complete) starts again from a one-token prompt at position 0
// with a fresh grammar state, in the next step, so the batch stays full; the restarts are in
// the time, as in ours. Rounds alternate unconstrained and constrained; each figure is the
// best of the rounds by steps/s (other load only slows a round down), as in ours.
//
// Tokens counted: every picked token that is not end-of-generation, in the timed steps. That is
// one token per sequence per step at most: llama.cpp has no fast-forward of forced tokens (a
// token the grammar leaves as the only choice is still sampled after a full step), where ours
// appends forced tokens without a step; so tokens/s and steps/s are the same figure here, and
// ours reports both.
//
// The B sequences' picks run concurrently on libuv's thread pool, as node-llama-cpp's own
// batch dispatcher runs them; bench/run_grammar_llama.sh sets UV_THREADPOOL_SIZE to the
// thread count so that llama.cpp's sampling uses no more cores than its decode does.
import fs from "fs";
import path from "path";
import { fail, loadModel, makeContext, openLlama, parseArgs, settleLog } from "../tests/tools/llama_ref.mjs";
import { contextSettings, now, promptIds } from "./llama_common.mjs";

const PROMPT_TOKENS = 16;

class Runner {
    constructor(ctx, model, llama, mod, grammar, vocab) {
        this.raw = ctx._ctx; // the addon's context: initBatch / addToBatch / decodeBatch / sampleToken
        this.model = model;
        this.bindings = llama._bindings;
        this.mod = mod;
        this.grammar = grammar;
        this.vocab = vocab;
        this.logitLast = new Uint32Array([0]);
    }

    // A fresh grammar state for one generation, or none unconstrained.
    grammarState(constrained) {
        return constrained ? new this.mod.LlamaGrammarEvaluationState({ model: this.model, grammar: this.grammar })
            : null;
    }

    // One sampler per sequence (the addon samples on worker threads; a sampler holds its
    // candidate buffer and its RNG), configured as ours samples.
    configure(sampler, seed, state) {
        const config = { temperature: 1, seed };
        if (state)
            config.grammarEvaluationState = state._state;
        sampler.applyConfig(config);
    }

    async figure(batch, steps, constrained) {
        const raw = this.raw;
        const samplers = Array.from({ length: batch }, () => new this.bindings.AddonSampler(this.model._model));
        const states = Array.from({ length: batch }, () => this.grammarState(constrained));
        samplers.forEach((s, i) => this.configure(s, 7 + i, states[i]));
        for (let s = 0; s < batch; s++)
            raw.disposeSequence(s); // llama_memory_seq_rm(seq, -1, -1)
        // untimed: every sequence's prompt in one batch, and the first picks
        raw.initBatch(batch * PROMPT_TOKENS);
        const logits = new Array(batch);
        for (let s = 0; s < batch; s++)
            [logits[s]] = raw.addToBatch(s, 0, promptIds(PROMPT_TOKENS, this.vocab, 100 + s),
                                         new Uint32Array([PROMPT_TOKENS - 1]));
        await raw.decodeBatch();
        let next = await Promise.all(logits.map((l, s) => raw.sampleToken(l, samplers[s])));
        const pos = new Array(batch).fill(PROMPT_TOKENS);
        let tokens = 0, restarts = 0, decodeSeconds = 0, sampleSeconds = 0;
        const shown = []; // sequence 0's output since its last start: the grammar at work
        const one = new Uint32Array(1);
        const restart = (s) => { // the next step feeds a one-token prompt at position 0
            restarts++;
            raw.disposeSequence(s);
            states[s] = this.grammarState(constrained);
            this.configure(samplers[s], 7 + s, states[s]);
            pos[s] = 0;
            if (s === 0)
                shown.length = 0;
            return promptIds(1, this.vocab, restarts * 131 + s)[0];
        };
        for (let s = 0; s < batch; s++)
            if (this.model.isEogToken(next[s]))
                next[s] = restart(s);
        restarts = 0; // restarts before the timed steps are not counted, as in ours
        const t0 = now();
        for (let step = 0; step < steps; step++) { // hot loop
            raw.initBatch(batch);
            for (let s = 0; s < batch; s++) {
                one[0] = next[s]; // addToBatch copies the ids into the llama_batch
                [logits[s]] = raw.addToBatch(s, pos[s]++, one, this.logitLast);
            }
            const td = now();
            await raw.decodeBatch();
            const ts = now();
            decodeSeconds += ts - td;
            next = await Promise.all(logits.map((l, s) => raw.sampleToken(l, samplers[s])));
            sampleSeconds += now() - ts;
            for (let s = 0; s < batch; s++) {
                if (next[s] === -1)
                    throw new Error(`llama.cpp found no token to sample (sequence ${s}, step ${step})`);
                if (this.model.isEogToken(next[s]))
                    next[s] = restart(s);
                else {
                    tokens++;
                    if (s === 0)
                        shown.push(next[s]);
                }
            }
        }
        const seconds = now() - t0;
        for (const s of samplers)
            s.dispose();
        return { tokens, steps, restarts, seconds, decode_seconds: decodeSeconds, sample_seconds: sampleSeconds,
                 tok_s: tokens / seconds, steps_s: steps / seconds,
                 sequence0_text: this.model.detokenize(shown) };
    }
}

async function main() {
    const args = parseArgs(process.argv.slice(2), {
        threads: "int", tokens: "int", batches: "string", rounds: "int", schema: "string",
        json: "string", verbose: "bool",
    });
    const [file] = args._;
    if (!file || !args.schema)
        fail("usage: llama_grammar.mjs MODEL.gguf --schema FILE [--threads 2] [--tokens 32] [--batches 1,8] [--rounds 2] [--json FILE]");
    const threads = args.threads ?? 2, tokens = args.tokens ?? 32, rounds = Math.max(1, args.rounds ?? 2);
    const batches = (args.batches ?? "1,8").split(",").map(Number);
    if (!batches.every((b) => Number.isInteger(b) && b > 0) || tokens < 1)
        fail("--batches wants positive integers (1,8); --tokens >= 1");
    let schema;
    try {
        schema = JSON.parse(fs.readFileSync(args.schema, "utf8"));
    } catch (e) {
        fail(`--schema ${args.schema}: ${e.message}`);
    }

    const { mod, llama, log, about } = await openLlama({ verbose: args.verbose, keepInfo: true });
    const t0 = now();
    const model = await loadModel(llama, file);
    const maxBatch = Math.max(...batches);
    const ctx = await makeContext(model, {
        tokens: PROMPT_TOKENS + tokens + 64, threads, sequences: maxBatch, kv: "f16", flashAttn: "auto",
        batch: maxBatch * PROMPT_TOKENS,
    });
    const loadSeconds = now() - t0;
    await settleLog(log);
    const settings = contextSettings(log);
    ctx._ctx.setThreads(threads); // the addon's value; LlamaContext's dispatcher is not used
    if (ctx._ctx.getThreads() !== threads)
        fail(`llama.cpp uses ${ctx._ctx.getThreads()} threads, not ${threads}`);
    const vocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length;
    if (!vocab)
        fail("cannot tell the vocabulary size from the GGUF metadata");
    const tc = now();
    const grammar = await llama.createGrammarForJsonSchema(schema);
    const grammarSeconds = now() - tc;
    const runner = new Runner(ctx, model, llama, mod, grammar, vocab);

    // warm-up: every figure once for 4 steps, untimed (first touch of the weights, graphs)
    for (const b of batches)
        for (const c of [false, true])
            await runner.figure(b, 4, c);

    const figures = [];
    for (const b of batches) {
        const best = { free: null, schema: null }, all = { free: [], schema: [] };
        for (let r = 0; r < rounds; r++)
            for (const [key, c] of [["free", false], ["schema", true]]) {
                const f = await runner.figure(b, tokens, c);
                all[key].push(f.steps_s);
                if (!best[key] || f.steps_s > best[key].steps_s)
                    best[key] = f;
            }
        figures.push({ batch: b, free: best.free, schema: best.schema,
                       tok_ratio: best.schema.tok_s / best.free.tok_s,
                       step_ratio: best.schema.steps_s / best.free.steps_s,
                       rounds_steps_s: all });
    }

    const out = {
        tool: "llama.cpp", model: path.resolve(file), description: model.typeDescription, threads, tokens,
        rounds, prompt_tokens: PROMPT_TOKENS, sampling: "temperature 1, seed 7+sequence, no top-k/top-p/min-p",
        uv_threadpool_size: process.env.UV_THREADPOOL_SIZE ?? "4 (libuv default)",
        kv_type: "f16", flash_attn: "auto", context: settings, vocab, load_seconds: loadSeconds,
        grammar_seconds: grammarSeconds, grammar_gbnf: grammar.grammar, figures, llama: about,
    };
    const text = JSON.stringify(out, null, 1);
    if (args.json)
        fs.writeFileSync(args.json, text + "\n");
    process.stdout.write(text + "\n");
    for (const f of figures)
        process.stderr.write(`llama.cpp batch ${f.batch}: free ${f.free.tok_s.toFixed(2)} tok/s, schema ` +
                             `${f.schema.tok_s.toFixed(2)} tok/s (${(100 * f.tok_ratio).toFixed(1)}%; sampling ` +
                             `${(100 * f.schema.sample_seconds / f.schema.seconds).toFixed(0)}% of the ` +
                             `constrained time, ${(100 * f.free.sample_seconds / f.free.seconds).toFixed(0)}% free)\n`);
    await ctx.dispose();
    await model.dispose();
    process.exit(0);
}

main().catch((e) => fail(process.env.LLAMA_REF_DEBUG ? e?.stack : e?.message ?? String(e), 1));
