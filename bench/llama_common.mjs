// llama_common.mjs — what bench/llama_bench.mjs (speed) and bench/llama_grammar.mjs
// (constrained decode) share when they drive llama.cpp through node-llama-cpp: timing, medians,
// deterministic prompts, llama.cpp's perf counters and the context settings from its log.

export const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
export const now = () => Number(process.hrtime.bigint()) / 1e9;
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Deterministic token ids in [0, vocab): the prompt's content does not change the work done.
export function promptIds(n, vocab, seed) {
    const ids = new Uint32Array(n);
    let x = (seed * 2654435761) >>> 0;
    for (let i = 0; i < n; i++) {
        x = (Math.imul(x, 1103515245) + 12345) >>> 0;
        ids[i] = (x >>> 8) % vocab;
    }
    return ids;
}

// llama.cpp's perf counters since the last call (printTimings prints and resets them; the log
// reaches JavaScript asynchronously, hence the wait, at most 3 s).
export async function perfCounters(raw, log) {
    const from = log.length;
    raw.printTimings();
    for (let i = 0; i < 300 && !log.slice(from).some((l) => /total time/.test(l.text)); i++)
        await sleep(10);
    const lines = log.slice(from).map((l) => l.text);
    const num = (re) => { const m = lines.map((t) => re.exec(t)).find(Boolean); return m ? Number(m[1]) : null; };
    return { prompt_eval_tokens: num(/prompt eval time =.*\/\s*(\d+) tokens/),
             eval_runs: num(/\beval time =.*\/\s*(\d+) runs/) };
}

// What llama.cpp says it set up: the context's sizes ("llama_context: n_batch = 256"), whether
// flash attention ended up on, and whether weights were repacked for this CPU (CPU_REPACK).
export function contextSettings(log) {
    const out = {};
    for (const { text } of log) {
        const m = /^llama_context:\s+(n_seq_max|n_ctx|n_ctx_seq|n_batch|n_ubatch|flash_attn|kv_unified)\s*=\s*(\S+)/.exec(text);
        if (m)
            out[m[1]] = /^\d+$/.test(m[2]) ? Number(m[2]) : m[2];
        const fa = /Flash Attention (enabled|disabled)/i.exec(text);
        if (fa)
            out.flash_attention_used = fa[1].toLowerCase() === "enabled";
        if (/CPU_REPACK model buffer size/.test(text))
            out.weights_repacked = true;
    }
    out.weights_repacked ??= false;
    return out;
}
