// Prefill and decode tokens/s of a GGUF model with llama.cpp (through
// node-llama-cpp, CPU only), for the side-by-side in scripts/bench-kernels.sh.
//
//   node scripts/llamacpp-speed.mjs PREFIX MODEL.gguf THREADS PREFILL DECODE REPS
//
// Prefill: one batch of PREFILL tokens into a fresh sequence (ids < 256, as
// the byte-level fixtures' tokenizer has). Decode: DECODE single-token
// evaluations after it, greedy. Best of REPS, by wall clock and by tokens per
// CPU-second of the process (a busy machine disturbs that less). Prints one
// JSON line.
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [prefix, modelPath, threadsArg, prefillArg, decodeArg, repsArg] = process.argv.slice(2);
if (!prefix || !modelPath || !threadsArg || !prefillArg || !decodeArg) {
	console.error("usage: llamacpp-speed.mjs PREFIX MODEL.gguf THREADS PREFILL DECODE [REPS]");
	process.exit(2);
}
const threads = Number(threadsArg), nPrefill = Number(prefillArg), nDecode = Number(decodeArg);
const reps = Number(repsArg || 3);
const entry = join(prefix, "node_modules", "node-llama-cpp", "dist", "index.js");
const { getLlama } = await import(pathToFileURL(entry).href);
const llama = await getLlama({
	gpu: false, build: "never", logLevel: process.env.LLAMA_LOG || "error", maxThreads: threads,
});
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const context = await model.createContext({
	contextSize: nPrefill + nDecode + 8,
	batchSize: nPrefill,
	sequences: 1,
	threads,
	flashAttention: false,
});
const prompt = Array.from({ length: nPrefill }, (_, i) => (i * 7919 + 13) % 256);
const sequence = context.getSequence();
let best = { prefill_tps: 0, decode_tps: 0, prefill_tpcpus: 0, decode_tpcpus: 0 };
const cpuS = (u) => (u.user + u.system) / 1e6;
for (let r = 0; r < reps; r++) {
	await sequence.clearHistory();
	let t0 = process.hrtime.bigint(), c0 = process.cpuUsage();
	await sequence.evaluateWithoutGeneratingNewTokens(prompt);
	const prefillS = Number(process.hrtime.bigint() - t0) / 1e9;
	const prefillC = cpuS(process.cpuUsage(c0));
	// Each value the generator yields is one evaluation of one token.
	let steps = 0;
	t0 = process.hrtime.bigint();
	c0 = process.cpuUsage();
	for await (const tok of sequence.evaluate([prompt[0]], { temperature: 0 })) {
		void tok;
		if (++steps >= nDecode)
			break;
	}
	const decodeS = Number(process.hrtime.bigint() - t0) / 1e9;
	const decodeC = cpuS(process.cpuUsage(c0));
	best.prefill_tps = Math.max(best.prefill_tps, nPrefill / prefillS);
	best.decode_tps = Math.max(best.decode_tps, steps / decodeS);
	best.prefill_tpcpus = Math.max(best.prefill_tpcpus, nPrefill / prefillC);
	best.decode_tpcpus = Math.max(best.decode_tpcpus, steps / decodeC);
}
await context.dispose();
await model.dispose();
console.log(JSON.stringify({ engine: "llama.cpp", threads, prefill_tokens: nPrefill,
	decode_tokens: nDecode, ...best }));
