// Perplexity of a GGUF model with llama.cpp (through node-llama-cpp), by
// llama.cpp's perplexity convention on a byte-level model: the text's bytes
// are the token ids, non-overlapping windows of CTX tokens, no BOS, and the
// predictions of positions CTX/2 .. CTX-2 of each window are scored.
//
//   node scripts/llamacpp-ppl.mjs PREFIX MODEL.gguf TEXT CTX
//
// PREFIX is where node-llama-cpp is installed (scripts/llamacpp.sh install).
// Prints one JSON line: {"ppl":..., "nll_mean":..., "scored":..., "windows":...}.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [prefix, modelPath, textPath, ctxArg] = process.argv.slice(2);
if (!prefix || !modelPath || !textPath || !ctxArg) {
	console.error("usage: llamacpp-ppl.mjs PREFIX MODEL.gguf TEXT CTX");
	process.exit(2);
}
const ctx = Number(ctxArg);
const entry = join(prefix, "node_modules", "node-llama-cpp", "dist", "index.js");
const { getLlama } = await import(pathToFileURL(entry).href);

// CPU prebuilt binary only: never build from source or download anything.
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const context = await model.createContext({
	contextSize: ctx,
	batchSize: ctx,
	sequences: 1,
	flashAttention: false,
	// fp32 KV cache, so the cache rounds nothing (the default is F16).
	experimentalKvCacheKeyType: "F32",
	experimentalKvCacheValueType: "F32",
});
const ids = Array.from(readFileSync(textPath));
const windows = Math.floor(ids.length / ctx);
const first = ctx / 2;
const sequence = context.getSequence();
let nll = 0, scored = 0;
for (let w = 0; w < windows; w++) {
	const tok = ids.slice(w * ctx, (w + 1) * ctx);
	await sequence.clearHistory();
	const input = tok.map((t, i) =>
		i >= first && i < ctx - 1 ? [t, { generateNext: { probabilities: true } }] : t);
	const out = await sequence.controlledEvaluate(input);
	for (let i = first; i < ctx - 1; i++) {
		const p = out[i]?.next?.probabilities?.get(tok[i + 1]);
		if (!(p > 0))
			throw new Error(`window ${w} position ${i}: no probability for token ${tok[i + 1]}`);
		nll -= Math.log(p);
		scored++;
	}
}
await context.dispose();
await model.dispose();
console.log(JSON.stringify({ ppl: Math.exp(nll / scored), nll_mean: nll / scored, scored, windows }));
