// Runs export/web/npy_random.js on the jobs given as JSON on stdin and prints the results
// as JSON (arrays as base64 of their little-endian bytes), for tests/web/test_npy_random.py.
//
// usage: node npy_random_dump.mjs < jobs.json
//   jobs.json = {"module": "/abs/path/npy_random.js", "jobs": [{"kind": ..., ...}, ...]}

import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const request = JSON.parse(readFileSync(0, "utf8"));
const rnd = await import(pathToFileURL(request.module).href);

const b64 = (typed) => Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength).toString("base64");
const fromB64 = (text, Type) => {
  const bytes = Buffer.from(text, "base64");
  return new Type(bytes.buffer, bytes.byteOffset, bytes.byteLength / Type.BYTES_PER_ELEMENT);
};
// Seeds travel as {"int": "<decimal>"} (BigInt), {"number": n} or {"string": "..."}.
const seedOf = (s) => ("int" in s ? BigInt(s.int) : "number" in s ? s.number : s.string);

function run(job) {
  switch (job.kind) {
    case "state": {
      const bitgen = new rnd.PCG64(seedOf(job.seed));
      const words = new rnd.SeedSequence(seedOf(job.seed)).generateState(job.words);
      return { state: bitgen.state.toString(), inc: bitgen.inc.toString(), words: Array.from(words) };
    }
    case "ops": {
      const rng = rnd.defaultRng(seedOf(job.seed));
      return job.ops.map(([op, ...args]) => {
        if (op === "normal") return b64(rng.standardNormal(args[0]));
        if (op === "random") return b64(rng.random(args[0]));
        if (op === "choice") return b64(rng.choice(args[0], args[1], args[2]));
        throw new Error(`unknown op ${op}`);
      });
    }
    case "prior": {
      const t0 = performance.now();
      const z = rnd.priorZ(job.n, job.d, seedOf(job.seed));
      return { z: b64(z), ms: performance.now() - t0 };
    }
    case "interpolate":
      return b64(rnd.interpolate(seedOf(job.a), seedOf(job.b), job.steps, job.d));
    case "mixture": {
      const out = rnd.mixturePriorZ(job.n, seedOf(job.seed), job.weights, job.means, job.log_vars);
      return { z: b64(out.z), comps: b64(out.comps), eps: b64(out.eps) };
    }
    case "log1pf": {
      const k = fromB64(job.k, Uint32Array);
      return b64(Float32Array.from(k, (v) => rnd.log1pf(-v / 16777216)));
    }
    default:
      throw new Error(`unknown job kind ${job.kind}`);
  }
}

const results = request.jobs.map((job) => {
  try {
    return { ok: run(job) };
  } catch (e) {
    return { error: `${e.name}: ${e.message}` };
  }
});
process.stdout.write(JSON.stringify(results));
