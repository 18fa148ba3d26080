// Every frame of the tests' WebSockets, checked against docs/asyncapi.yaml with a JSON Schema
// validator: what the server sends must be a ServerMessage (events with their data checked by
// the schema's if/then), what the SDK sends a ClientMessage. A violation is recorded, never
// thrown, so a test can report all of them at once.
import { readFile } from "node:fs/promises";
import { join } from "node:path";

import { Ajv, type ValidateFunction } from "ajv";
import { parse } from "yaml";
import WebSocket from "ws";

import type { WebSocketConstructor } from "../../src/index.js";
import { REPO } from "./stack.js";

export interface Frame {
  readonly direction: "in" | "out";
  readonly message: Record<string, unknown>;
}

export interface Wire {
  readonly WebSocket: WebSocketConstructor;
  readonly frames: Frame[];
  readonly violations: string[];
  /** Sockets opened through it. */
  readonly sockets: number;
}

function rewriteRefs(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(rewriteRefs);
  if (node === null || typeof node !== "object") return node;
  return Object.fromEntries(
    Object.entries(node).map(([key, value]) => [
      key,
      key === "$ref" && typeof value === "string" ? value.replace("#/components/schemas/", "#/definitions/") : rewriteRefs(value),
    ]),
  );
}

let validators: Promise<{ server: ValidateFunction; client: ValidateFunction }> | undefined;

function loadValidators(): Promise<{ server: ValidateFunction; client: ValidateFunction }> {
  validators ??= (async () => {
    const doc = parse(await readFile(join(REPO, "docs/asyncapi.yaml"), "utf8")) as { components: { schemas: object } };
    const definitions = rewriteRefs(doc.components.schemas) as Record<string, object>;
    const union = (names: string[]): object => ({ definitions, oneOf: names.map((name) => ({ $ref: `#/definitions/${name}` })) });
    const ajv = new Ajv({ allErrors: true, strict: false });
    return {
      server: ajv.compile(union(["AuthRequired", "AuthOk", "AuthInvalid", "TokenExpired", "Result", "Pong", "EventMessage"])),
      client: ajv.compile(union(["Auth", "ClientCommand"])),
    };
  })();
  return validators;
}

/** A `ws` WebSocket class that records and checks every frame. */
export async function checkedWire(): Promise<Wire> {
  const { server, client } = await loadValidators();
  const frames: Frame[] = [];
  const violations: string[] = [];
  let sockets = 0;
  const check = (direction: Frame["direction"], text: string): void => {
    const message = JSON.parse(text) as Record<string, unknown>;
    frames.push({ direction, message });
    const validate = direction === "in" ? server : client;
    if (!validate(message)) {
      const errors = (validate.errors ?? []).slice(0, 3).map((error) => `${error.instancePath} ${error.message ?? ""}`);
      violations.push(`${direction === "in" ? "server sent" : "SDK sent"} ${text.slice(0, 300)}: ${errors.join("; ")}`);
    }
  };
  class CheckedWebSocket extends WebSocket {
    constructor(url: string) {
      super(url);
      sockets += 1;
      this.addEventListener("message", (event) => check("in", event.data as string));
    }

    override send(data: string): void {
      check("out", data);
      super.send(data);
    }
  }
  return {
    WebSocket: CheckedWebSocket,
    frames,
    violations,
    get sockets() {
      return sockets;
    },
  };
}
