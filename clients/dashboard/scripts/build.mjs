#!/usr/bin/env node
// Builds the dashboard into the server's package (addon/thermo_bridge_server/http/dashboard/):
// index.html plus content-hashed ES modules under assets/ (the server caches those for a year
// and revalidates index.html). The output is committed, so the add-on image needs no Node
// stage; `--check` rebuilds in memory and exits 1 when the committed files differ (stale).
import { Buffer } from "node:buffer";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = join(dirname(fileURLToPath(import.meta.url)), "..");
const repo = join(here, "..", "..");
const out = join(repo, "addon", "thermo_bridge_server", "http", "dashboard");
const check = process.argv.includes("--check");

const result = await build({
  absWorkingDir: here,
  entryPoints: { main: "src/main.ts", auth0: "src/auth0.ts" },
  bundle: true,
  splitting: true, // Auth0's SDK is a separate chunk, loaded only in Auth0 mode
  format: "esm",
  minify: true,
  target: ["es2022", "chrome111", "firefox114", "safari16.4"],
  entryNames: "[name]-[hash]",
  chunkNames: "[name]-[hash]",
  outdir: join(out, "assets"),
  loader: { ".css": "text" }, // uPlot's stylesheet goes into the chart's shadow root (adoptedStyleSheets)
  alias: { "@thermo-bridge/client": join(repo, "clients", "js", "src", "index.ts") },
  legalComments: "eof",
  charset: "utf8",
  metafile: true,
  write: false,
  logLevel: "warning",
});

const entry = Object.entries(result.metafile.outputs).find(([, meta]) => meta.entryPoint === "src/main.ts");
if (!entry) throw new Error("esbuild produced no entry module");
const index = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Thermo Bridge</title>
<link rel="icon" href="data:,">
<script type="module" src="assets/${basename(entry[0])}"></script>
</head>
<body>
<tb-app></tb-app>
<noscript>The Thermo Bridge dashboard needs JavaScript. The API is under api/v1/ (api/v1/openapi.json).</noscript>
</body>
</html>
`;

const files = new Map([["index.html", Buffer.from(index)]]);
for (const file of result.outputFiles) files.set(relative(out, file.path), Buffer.from(file.contents));

async function existing(dir, prefix = "") {
  const found = new Map();
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const item of entries) {
    const name = prefix ? `${prefix}/${item.name}` : item.name;
    if (item.isDirectory()) for (const [k, v] of await existing(join(dir, item.name), name)) found.set(k, v);
    else found.set(name, await readFile(join(dir, item.name)));
  }
  return found;
}

if (check) {
  const onDisk = await existing(out);
  const stale = [...new Set([...files.keys(), ...onDisk.keys()])].filter(
    (name) => !files.has(name) || !onDisk.has(name) || !files.get(name).equals(onDisk.get(name)),
  );
  if (stale.length) {
    console.error(`the committed dashboard build is stale (${stale.join(", ")}): run npm run build -w @thermo-bridge/dashboard`);
    process.exit(1);
  }
  console.log(`dashboard build up to date (${files.size} files)`);
} else {
  await rm(out, { recursive: true, force: true });
  for (const [name, content] of files) {
    await mkdir(dirname(join(out, name)), { recursive: true });
    await writeFile(join(out, name), content);
  }
  console.log(`dashboard built into ${relative(repo, out)}: ${[...files.keys()].join(", ")}`);
}
