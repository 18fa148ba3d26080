// Validates docs/asyncapi.yaml with AsyncAPI's own parser and prints what the tests need as JSON:
// {"diagnostics": [...], "schemas": {name: schema}, "messages": {channel: {message: payload schema}}}.
// Usage: node scripts/asyncapi.mjs [path]; exits 1 when the parser reports an error.
import { Parser, fromFile } from '@asyncapi/parser';

const path = process.argv[2] ?? 'docs/asyncapi.yaml';
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, path).parse();
const report = {
  diagnostics: diagnostics.map((d) => ({ severity: d.severity, code: d.code, message: d.message, path: d.path })),
  schemas: {},
  messages: {},
};
if (document) {
  for (const schema of document.components().schemas()) report.schemas[schema.id()] = schema.json();
  for (const channel of document.channels()) {
    const messages = {};
    for (const message of channel.messages()) messages[message.id()] = message.payload()?.json() ?? null;
    report.messages[channel.id()] = messages;
  }
}
process.stdout.write(JSON.stringify(report));
process.exitCode = document && !diagnostics.some((d) => d.severity === 0) ? 0 : 1; // not exit(): stdout must flush
