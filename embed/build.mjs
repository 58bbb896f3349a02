// Builds the browser harness into distribute/static/embed/ (git-ignored; the server serves it).
//
//   broker.js (+ chunks)  the broker UI; session.js is a separate chunk loaded on "Contribute"
//   broker.css            the card's styles
//   runner.js             the runner script; the server inlines it into /embed/runner and allows
//                         it by hash in that document's CSP, and it carries the worker bootstrap
//                         (worker.js + msgpack) as a string to build kernel blobs from
//
// Usage: node build.mjs [--watch is not supported: rebuild and restart the server]

import { createHash } from "node:crypto";
import { copyFile, mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "distribute", "static", "embed");
const common = { bundle: true, platform: "browser", target: ["chrome111", "firefox119", "safari16.4"], minify: true, legalComments: "none", logLevel: "warning" };

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });

// 1. The worker bootstrap, as text (blob.js puts the kernel after it and counts its lines).
const worker = await esbuild.build({ ...common, entryPoints: [join(here, "src", "worker.js")], format: "iife", globalName: "__distribute", write: false });
const workerSource = worker.outputFiles[0].text.trim();

// 2. The runner, with the bootstrap inlined.
const runner = await esbuild.build({
  ...common,
  entryPoints: [join(here, "src", "runner.js")],
  format: "iife",
  define: { __WORKER_SOURCE__: JSON.stringify(workerSource) },
  write: false,
});
const runnerSource = runner.outputFiles[0].text;
// It is inlined into a <script> element: the HTML parser must not see an end tag inside it.
if (/<\/script/i.test(runnerSource) || /<!--/.test(runnerSource)) throw new Error("runner.js contains '</script' or '<!--'");
await writeFile(join(out, "runner.js"), runnerSource);

// 3. The broker UI, with session.js split off (ES modules: the page loads it with import()).
await esbuild.build({
  ...common,
  entryPoints: [join(here, "src", "broker.js")],
  format: "esm",
  splitting: true,
  outdir: out,
  entryNames: "[name]",
  chunkNames: "[name]-[hash]",
});
await copyFile(join(here, "src", "broker.css"), join(out, "broker.css"));

const files = (await readdir(out)).sort();
const sha = createHash("sha256").update(runnerSource).digest("base64");
console.log(`built ${files.join(", ")} into ${out} (runner sha256-${sha})`);
