// The default tabs: the GraphQL blocks of README.md's "A session in GraphiQL", read at build
// time, so that the page and the README cannot drift apart. Subscriptions get a tab each (a
// subscription runs until stopped); the rest share the first tab as named operations.
import readme from '../../README.md?raw';

const SECTION = '## A session in GraphiQL';

export function readmeBlocks(text: string): string[] {
  const start = text.indexOf(SECTION);
  if (start < 0) return [];
  const rest = text.slice(start + SECTION.length);
  const end = rest.search(/^## /m);
  const section = end < 0 ? rest : rest.slice(0, end);
  return [...section.matchAll(/^```graphql\n([\s\S]*?)^```/gm)].map((m) => (m[1] ?? '').trim());
}

const blocks = readmeBlocks(readme);
const isSubscription = (block: string) => /^subscription\b/.test(block);
const header =
  '# The walk-through of the README, step by step: put the cursor in an operation and press\n' +
  '# Ctrl-Enter (or pick it from the run button). Replace "<order id>" with the id createOrder answers.\n\n';

export const walkthroughTabs = [
  { query: header + blocks.filter((b) => !isSubscription(b)).join('\n\n') + '\n' },
  ...blocks.filter(isSubscription).map((query) => ({ query: query + '\n' })),
];
