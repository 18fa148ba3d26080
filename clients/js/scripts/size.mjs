#!/usr/bin/env node
// The SDK's weight in an app: the whole SDK bundled into one minified ES2022 module (esbuild,
// straight from src/ so it never measures a stale build), then gzip.
// Prints the sizes; with --max-gzip=<bytes> exits 1 above that budget.
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const result = await build({
  entryPoints: [join(root, "src/index.ts")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  platform: "neutral",
  write: false,
});
const code = result.outputFiles[0].contents;
const gzip = gzipSync(code, { level: 9 }).length;
console.log(`@thermo-bridge/client: ${code.length} bytes minified, ${gzip} bytes minified + gzip`);
const budget = process.argv.find((arg) => arg.startsWith("--max-gzip="));
if (budget && gzip > Number(budget.split("=")[1])) {
  console.error(`over the budget of ${budget.split("=")[1]} bytes gzipped`);
  process.exit(1);
}
