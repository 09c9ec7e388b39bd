#!/usr/bin/env node
// @ts-check
// Validates every GraphQL document the admin sends (src/ and e2e/) against the server's
// exported SDL (../schema.graphql), so a drift between the UI and the API fails the build.
//
// Documents are the template literals tagged `gql` or marked /* GraphQL */. A `${NAME}`
// interpolation must name another such template (a fragment) defined in the same file.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSchema, Kind, parse, specifiedRules, NoUnusedFragmentsRule, validate } from 'graphql';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const serverSchema = resolve(root, '..', 'schema.graphql');
const fallbackSchema = resolve(root, 'scripts', 'contract-schema.graphql');

let schemaPath = process.env.SCHEMA_PATH ? resolve(process.env.SCHEMA_PATH) : serverSchema;
if (!existsSync(schemaPath)) {
  if (process.env.CHECK_OPS_STRICT) {
    console.error(`check:ops: ${schemaPath} not found (run \`order-service export-schema > schema.graphql\`)`);
    process.exit(1);
  }
  console.warn(`check:ops: WARNING ${relative(process.cwd(), schemaPath)} not found; using the contract copy ${relative(process.cwd(), fallbackSchema)}`);
  schemaPath = fallbackSchema;
}

const schema = buildSchema(readFileSync(schemaPath, 'utf8'));

/** @param {string} dir @returns {string[]} */
function walk(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (name === 'node_modules' || name === 'screenshots') return [];
    if (statSync(path).isDirectory()) return walk(path);
    return /\.(m?[jt]sx?)$/.test(name) ? [path] : [];
  });
}

const TAG = String.raw`(?:\bgql|\/\*\s*GraphQL\s*\*\/)\s*`;
const templateRe = new RegExp(TAG + '`([^`]*)`', 'g');
const namedRe = new RegExp(String.raw`\bconst\s+(\w+)(?:\s*:[^=]+?)?\s*=\s*` + TAG + '`([^`]*)`', 'g');

let errors = 0;
let checked = 0;
const operationNames = new Map();

for (const file of [...walk(join(root, 'src')), ...walk(join(root, 'e2e'))]) {
  const text = readFileSync(file, 'utf8');
  const rel = relative(root, file);
  /** @type {Map<string, string>} */
  const named = new Map();
  for (const m of text.matchAll(namedRe)) named.set(m[1], m[2]);

  /** @param {string} body @param {string[]} seen @returns {string} */
  const expand = (body, seen) =>
    body.replace(/\$\{\s*(\w+)\s*\}/g, (_, name) => {
      const target = named.get(name);
      if (target === undefined) throw new Error(`\${${name}} is not a gql template in this file`);
      if (seen.includes(name)) throw new Error(`circular fragment interpolation via ${name}`);
      return expand(target, [...seen, name]);
    });

  for (const m of text.matchAll(templateRe)) {
    const line = text.slice(0, m.index).split('\n').length;
    const where = `${rel}:${line}`;
    let doc;
    try {
      doc = parse(expand(m[1], []));
    } catch (e) {
      console.error(`✗ ${where}: ${e instanceof Error ? e.message : e}`);
      errors++;
      continue;
    }
    // The same fragment may be interpolated twice; Apollo's gql de-duplicates it too.
    const seenFragments = new Set();
    const definitions = doc.definitions.filter((d) => {
      if (d.kind !== Kind.FRAGMENT_DEFINITION) return true;
      if (seenFragments.has(d.name.value)) return false;
      seenFragments.add(d.name.value);
      return true;
    });
    doc = { ...doc, definitions };
    const operations = definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION);
    const rules = operations.length ? specifiedRules : specifiedRules.filter((r) => r !== NoUnusedFragmentsRule);
    const problems = validate(schema, doc, rules);
    const label = operations.map((o) => (o.kind === Kind.OPERATION_DEFINITION && o.name?.value) || '(anonymous)').join(', ') ||
      `fragment ${[...seenFragments].join(', ')}`;
    for (const op of operations) {
      if (op.kind !== Kind.OPERATION_DEFINITION) continue;
      if (!op.name) {
        console.error(`✗ ${where}: operations must be named`);
        errors++;
        continue;
      }
      const prev = operationNames.get(op.name.value);
      if (prev && prev !== where) {
        console.error(`✗ ${where}: operation name ${op.name.value} is also used at ${prev}`);
        errors++;
      }
      operationNames.set(op.name.value, where);
    }
    if (problems.length) {
      for (const p of problems) console.error(`✗ ${where} ${label}: ${p.message}`);
      errors += problems.length;
    } else {
      checked++;
      if (process.env.VERBOSE) console.log(`✓ ${where} ${label}`);
    }
  }
}

if (checked === 0 && errors === 0) {
  console.error('check:ops: found no GraphQL documents; is the extractor broken?');
  process.exit(1);
}
console.log(`check:ops: ${checked} document(s) valid, ${errors} error(s), schema ${relative(process.cwd(), schemaPath)}`);
process.exit(errors ? 1 : 0);
