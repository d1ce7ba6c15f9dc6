#!/usr/bin/env node
// openai_client.mjs — the official OpenAI node client (installed by `make openai-client` into
// .tools/openai/) against nexusd's HTTP front, as a user of the SDK would call it: only
// baseURL and model differ from talking to OpenAI. Runs the steps given as a JSON list and
// prints one JSON result per step (a JSON list on stdout).
//
//   node tests/tools/openai_client.mjs BASE_URL API_KEY '[{"do": "chat", ...}, ...]'
//
// steps: {"do": "chat", "model", "messages", ...params}     -> {content, finish_reason, usage, id}
//        {"do": "stream", "model", "messages", ...params}   -> {text, chunks, finish_reason, usage}
//        {"do": "stream_final", "model", "messages", ...params}
//            -> {content, tool_calls, finish_reason, chunks}: the SDK's stream helper
//            (beta.chat.completions.stream) and its finalChatCompletion(), which reassembles
//            delta.tool_calls; "chat" answers tool_calls too (null when none)
//        {"do": "completion", "model", "prompt", ...params} -> {text, finish_reason, usage}
//        {"do": "models"}                                   -> {ids}
//        {"do": "parse", "model", "messages", "response_format", ...params}
//            -> {content, parsed, finish_reason}: the SDK's own parse of a json_schema answer
//        {"do": "disconnect", "model", "messages", "after"} -> {id, chunks}: aborts the stream
//            after `after` content chunks (the server must cancel the task)
//        {"do": "wait"}                                     -> {}: reads one line of stdin first
//            (node and the client are loaded by then: the next step goes out at once)
//   any step that throws the client's APIError -> {error: {status, code, type, message,
//   retry_after}}
// env: OPENAI_DIR (default <repo>/.tools/openai). Exit status: 0 done, 2 usage, 3 not installed.
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const dir = process.env.OPENAI_DIR || path.join(here, "..", "..", ".tools", "openai");
if (!existsSync(path.join(dir, "node_modules", "openai", "package.json"))) {
  console.error(`openai_client: the openai package is not installed in ${dir} (make openai-client)`);
  process.exit(3);
}
if (process.argv.length !== 5) {
  console.error("usage: openai_client.mjs BASE_URL API_KEY STEPS_JSON");
  process.exit(2);
}
const require = createRequire(path.join(dir, "package.json"));
const { default: OpenAI, APIError } = require("openai");

const [baseURL, apiKey, stepsJson] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30000 });

function params(step) {
  const { do: _, after: __, ...rest } = step;
  return rest;
}

async function run(step) {
  switch (step.do) {
    case "chat": {
      const r = await client.chat.completions.create(params(step));
      return { id: r.id, object: r.object, model: r.model, content: r.choices[0].message.content,
               role: r.choices[0].message.role, finish_reason: r.choices[0].finish_reason,
               tool_calls: r.choices[0].message.tool_calls ?? null, usage: r.usage };
    }
    case "stream_final": {
      const chat = client.chat.completions.stream ? client.chat.completions
                                                  : client.beta.chat.completions;
      const stream = chat.stream(params(step));
      let chunks = 0;
      stream.on("chunk", () => chunks++);
      const r = await stream.finalChatCompletion();
      const m = r.choices[0].message;
      const calls = m.tool_calls && m.tool_calls.length
        ? m.tool_calls.map((c) => ({ id: c.id, type: c.type,
                                     function: { name: c.function.name,
                                                 arguments: c.function.arguments } }))
        : null;
      return { content: m.content, tool_calls: calls, finish_reason: r.choices[0].finish_reason,
               chunks };
    }
    case "stream": {
      const stream = await client.chat.completions.create({ ...params(step), stream: true });
      let text = "", chunks = 0, finish = null, usage = null, id = null, role = null;
      for await (const chunk of stream) {
        chunks++;
        id = chunk.id;
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices[0];
        if (!choice) continue;
        if (choice.delta.role) role = choice.delta.role;
        if (choice.delta.content) text += choice.delta.content;
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      return { id, text, chunks, role, finish_reason: finish, usage };
    }
    case "completion": {
      const r = await client.completions.create(params(step));
      return { id: r.id, object: r.object, text: r.choices[0].text,
               finish_reason: r.choices[0].finish_reason, usage: r.usage };
    }
    case "parse": {
      const chat = client.chat.completions.parse ? client.chat.completions
                                                 : client.beta.chat.completions;
      const r = await chat.parse(params(step));
      const m = r.choices[0].message;
      return { content: m.content, parsed: m.parsed, finish_reason: r.choices[0].finish_reason };
    }
    case "models": {
      const page = await client.models.list();
      return { ids: page.data.map((m) => m.id) };
    }
    case "disconnect": {
      const stream = await client.chat.completions.create({ ...params(step), stream: true });
      let chunks = 0, id = null;
      for await (const chunk of stream) {
        id = chunk.id;
        if (chunk.choices[0]?.delta?.content) chunks++;
        if (chunks >= (step.after || 1)) {
          stream.controller.abort(); // the connection closes mid-stream
          break;
        }
      }
      return { id, chunks };
    }
    case "wait": {
      for await (const _ of readline.createInterface({ input: process.stdin })) break;
      return {};
    }
    default:
      throw new Error(`unknown step ${step.do}`);
  }
}

const results = [];
for (const step of JSON.parse(stepsJson)) {
  try {
    results.push(await run(step));
  } catch (e) {
    if (!(e instanceof APIError)) throw e;
    results.push({ error: { status: e.status ?? null, code: e.code ?? null, type: e.type ?? null,
                            message: e.message, retry_after: e.headers?.["retry-after"] ?? null } });
  }
}
process.stdout.write(JSON.stringify(results) + "\n");
