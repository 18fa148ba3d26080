import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { SseParser } from "../../src/sse-parser.js";

describe("SseParser", () => {
  it("dispatches named events, joins data lines and skips comments", () => {
    const parser = new SseParser();
    const text = ': keep-alive\n\nid: e:1\nevent: state\ndata: {"a":\ndata: 1}\n\ndata: plain\n\n';
    assert.deepEqual(parser.feed(text), [
      { event: "state", data: '{"a":\n1}' },
      { event: "message", data: "plain" },
    ]);
  });

  it("handles chunks split anywhere, including inside a CRLF", () => {
    const text = "event: ready\r\ndata: {}\r\n\r\nevent: snapshot\rdata: x\r\r\n";
    const whole = new SseParser().feed(text);
    for (let cut = 1; cut < text.length; cut++) {
      const parser = new SseParser();
      assert.deepEqual([...parser.feed(text.slice(0, cut)), ...parser.feed(text.slice(cut))], whole, `cut at ${cut}`);
    }
    assert.deepEqual(whole, [
      { event: "ready", data: "{}" },
      { event: "snapshot", data: "x" },
    ]);
  });

  it("keeps an event without its blank line until the line comes", () => {
    const parser = new SseParser();
    assert.deepEqual(parser.feed("event: state\ndata: 1\n"), []);
    assert.deepEqual(parser.feed("\n"), [{ event: "state", data: "1" }]);
  });
});
