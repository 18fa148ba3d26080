#!/usr/bin/env node
// The dashboard's weight: every built file (index.html and assets/) gzipped, the first load
// (what the page fetches before any login: everything but the lazily loaded Auth0 chunk) and
// the total. With --max-gzip=<bytes> exits 1 when the total is above that budget.
import { readdir, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const out = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "addon", "thermo_bridge_server", "http", "dashboard");
const names = ["index.html", ...(await readdir(join(out, "assets"))).map((name) => `assets/${name}`)];
let total = 0;
let lazy = 0;
for (const name of names) {
  const content = await readFile(join(out, name));
  const gzip = gzipSync(content, { level: 9 }).length;
  total += gzip;
  if (name.startsWith("assets/auth0-")) lazy += gzip;
  console.log(`${name}: ${content.length} bytes, ${gzip} gzipped`);
}
console.log(`dashboard: ${total} bytes gzipped in all (${total - lazy} before a login, Auth0's SDK ${lazy} more)`);
const budget = process.argv.find((arg) => arg.startsWith("--max-gzip="));
if (budget && total > Number(budget.split("=")[1])) {
  console.error(`over the budget of ${budget.split("=")[1]} bytes gzipped`);
  process.exit(1);
}
