// Validates an AsyncAPI document with the official parser (the spec's JSON Schema and its
// rules): `node validate.mjs asyncapi.json`. Prints {"valid", "diagnostics", "operations"} as
// JSON and exits 1 when the document has errors.
import { Parser } from '@asyncapi/parser';
import { readFileSync } from 'node:fs';

const SEVERITY = ['error', 'warning', 'info', 'hint'];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(process.argv[2], 'utf8'));
const report = {
  valid: document !== undefined,
  diagnostics: diagnostics.map((d) => ({
    severity: SEVERITY[d.severity],
    code: d.code,
    message: d.message,
    path: d.path.join('/'),
  })),
  operations: document ? document.operations().all().map((op) => op.id()) : [],
};
console.log(JSON.stringify(report, null, 1));
process.exit(report.valid ? 0 : 1);
