// The committed wire types must be what the generators make of the server's current contracts
// (OpenAPI document, AsyncAPI document, protocol config schema): regenerate into a temporary
// folder and compare, file by file.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { promisify } from "node:util";

const PACKAGE = join(import.meta.dirname, "../..");

it("src/generated matches the server's OpenAPI, AsyncAPI and config schemas", async () => {
  const fresh = await mkdtemp(join(tmpdir(), "thermo-bridge-types-"));
  try {
    await promisify(execFile)(process.execPath, [join(PACKAGE, "scripts/generate-types.mjs"), fresh]);
    const committed = join(PACKAGE, "src/generated");
    const names = (await readdir(fresh)).sort();
    assert.deepEqual((await readdir(committed)).sort(), names);
    for (const name of names) {
      assert.equal(
        await readFile(join(committed, name), "utf8"),
        await readFile(join(fresh, name), "utf8"),
        `clients/js/src/generated/${name} is stale: run \`npm run generate -w @thermo-bridge/client\``,
      );
    }
  } finally {
    await rm(fresh, { recursive: true, force: true });
  }
});
