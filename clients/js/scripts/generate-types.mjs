#!/usr/bin/env node
// Generates the SDK's wire types from the server's own contracts:
//   rest.ts      from addon/thermo_bridge_server/http/openapi.json (openapi-typescript)
//   messages.ts  from docs/asyncapi.yaml's components.schemas (json-schema-to-typescript)
//   protocol.ts  from the device config's JSON Schema (docs/schemas/, the payload of the
//                AsyncAPI document's deviceConfig message), the wire form that the snapshot's
//                and the device_added/updated events' `config` carry (same tool)
// Usage: node scripts/generate-types.mjs <out-dir>. `npm run generate` refreshes src/generated;
// test/generated.test.ts regenerates into a temporary folder and fails on any difference.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { compile } from "json-schema-to-typescript";
import openapiTS, { astToString } from "openapi-typescript";
import { parse } from "yaml";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, "../../..");
export const OPENAPI = join(REPO, "addon/thermo_bridge_server/http/openapi.json");
export const ASYNCAPI = join(REPO, "docs/asyncapi.yaml");

const banner = (source, tool) =>
  `// Generated from ${source} by ${tool} (clients/js/scripts/generate-types.mjs).\n` +
  "// Do not edit: run `npm run generate -w @thermo-bridge/client` after changing the source.\n";

async function restTypes() {
  // An object schema without properties (error details, free-form config parts) may hold
  // anything: unknown, not openapi-typescript's default Record<string, never>.
  const ast = await openapiTS(pathToFileURL(OPENAPI), { emptyObjectsUnknown: true });
  return banner("addon/thermo_bridge_server/http/openapi.json", "openapi-typescript") + "\n" + astToString(ast);
}

/** Rewrites AsyncAPI's `#/components/schemas/X` references to the JSON Schema `#/$defs/X`. */
function rewriteRefs(node) {
  if (Array.isArray(node)) return node.map(rewriteRefs);
  if (node === null || typeof node !== "object") return node;
  return Object.fromEntries(
    Object.entries(node).map(([key, value]) =>
      key === "$ref" && typeof value === "string"
        ? [key, value.replace("#/components/schemas/", "#/$defs/")]
        : [key, rewriteRefs(value)],
    ),
  );
}

/** Follows a local reference (`#/a/b/c`) in the document. */
const resolveRef = (doc, ref) => ref.split("/").slice(1).reduce((node, key) => node[key], doc);

/** The payload schema's name of a message reference; channel messages refer on to components.messages. */
function payloadName(doc, ref) {
  let message = resolveRef(doc, ref);
  if (message.$ref) message = resolveRef(doc, message.$ref);
  return message.payload.$ref.split("/").pop();
}

async function messageTypes() {
  const doc = parse(await readFile(ASYNCAPI, "utf8"));
  const definitions = rewriteRefs(doc.components.schemas);
  // JSON Schema's if/then (Event.data by Event.type) has no TypeScript counterpart in the
  // generator; src/types.ts narrows Event by its type instead.
  delete definitions.Event.allOf;
  const union = (names) => ({ oneOf: [...new Set(names)].map((name) => ({ $ref: `#/$defs/${name}` })) });
  const operation = (name) => doc.operations[name].messages.map(({ $ref }) => payloadName(doc, $ref));
  const channel = (name) => Object.values(doc.channels[name].messages).map(({ $ref }) => payloadName(doc, $ref));
  // Named unions per direction and transport; the root (every payload of both channels) makes
  // each definition a message uses reachable, which is what the generator emits.
  definitions.ServerMessage = {
    description: "Everything the server sends on the WebSocket (operation sendServerMessages).",
    ...union(operation("sendServerMessages")),
  };
  definitions.ClientMessage = {
    description: "Everything a client sends on the WebSocket (operation receiveClientMessages).",
    ...union(operation("receiveClientMessages")),
  };
  definitions.SseMessage = {
    description: "The data of every Server-Sent Event (channel sse).",
    ...union(channel("sse")),
  };
  const root = {
    title: "RealtimeMessage",
    description: "Any payload of the WebSocket and SSE channels.",
    $defs: definitions,
    ...union(["ServerMessage", "ClientMessage", "SseMessage"]),
  };
  const body = await compile(root, "RealtimeMessage", {
    bannerComment: "",
    // Plain arrays, not a union of tuples per length up to maxItems.
    maxItems: -1,
  });
  return banner("docs/asyncapi.yaml (components.schemas)", "json-schema-to-typescript") + "\n" + body;
}

async function protocolTypes() {
  const doc = parse(await readFile(ASYNCAPI, "utf8"));
  const file = join(dirname(ASYNCAPI), doc.components.messages.deviceConfig.payload.$ref);
  const schema = JSON.parse(await readFile(file, "utf8"));
  const body = await compile({ ...schema, title: "DeviceConfig" }, "DeviceConfig", { bannerComment: "", maxItems: -1 });
  return banner(`docs/${relative(dirname(ASYNCAPI), file)}`, "json-schema-to-typescript") + "\n" + body;
}

export async function generate(outDir) {
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, "rest.ts"), await restTypes());
  await writeFile(join(outDir, "messages.ts"), await messageTypes());
  await writeFile(join(outDir, "protocol.ts"), await protocolTypes());
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const outDir = process.argv[2];
  if (!outDir) {
    console.error("usage: generate-types.mjs <out-dir>");
    process.exit(2);
  }
  await generate(resolve(outDir));
}
