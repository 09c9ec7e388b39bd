// @ts-check
// GraphiQL at GET /graphql, as a developer without internet access uses it: every request to
// a host other than this machine is blocked. It must load from the service's own files, log in,
// run a query with the token in the headers pane, and receive a subscription's event when the
// order is changed from outside (over HTTP, by this test). Screenshots in e2e/screenshots/.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  ADMIN,
  ALICE,
  BASE_URL,
  CREATE_ORDER,
  SCREENSHOTS,
  UPDATE_STATUS,
  apiLogin,
  eventually,
  gql,
  graphqlFetch,
  launchBrowser,
  randomToken,
} from './helpers.mjs';

const GRAPHIQL_URL = `${BASE_URL}/graphql`;
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

/** @type {import('playwright-core').Browser} */
let browser;
/** @type {import('playwright-core').Page} */
let page;
/** The access token login answered in the browser. */
let token = '';
/** @type {string[]} */
const leftTheMachine = [];
/** @type {string[]} */
const cspViolations = [];
/** @type {string[]} */
const pageErrors = [];

/**
 * Replaces the whole text of a Monaco editor (GraphiQL's query or headers editor), as a
 * person pasting into it would.
 * @param {import('playwright-core').Locator} editor @param {string} text
 */
async function replaceText(editor, text) {
  const shown = async () => (await editor.locator('.view-lines').innerText()).replace(/\u00a0/g, ' ').trim();
  // Right after the page loads, Monaco may not take the focus yet: try again until it shows the text.
  await eventually(async () => {
    await editor.locator('.view-lines').click();
    await page.keyboard.press('ControlOrMeta+A');
    await page.keyboard.press('Delete');
    await page.keyboard.insertText(text);
    return (await shown()) === text.trim();
  }, 'the editor to hold the typed text', 15_000);
}

/** graphql_active_subscriptions from /metrics. */
async function liveSubscriptions() {
  const text = await (await fetch(`${BASE_URL}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('graphql_active_subscriptions '));
  return Number(line?.split(' ')[1] ?? 0);
}

const queryEditor = () => page.locator('.graphiql-query-editor');
const headersEditor = () => page.locator('.graphiql-editor-tool .graphiql-editor').last();
const responsePane = () => page.locator('.graphiql-response');
const responseText = async () => (await responsePane().innerText()).replace(/\u00a0/g, ' ');

/**
 * Types a document into the query editor and waits until GraphiQL has taken its operation's
 * name (the active tab is named after it; a run before that sends the previous name).
 * @param {string} document
 */
async function typeOperation(document) {
  await replaceText(queryEditor(), document);
  const name = /^\s*(?:query|mutation|subscription)\s+(\w+)/.exec(document)?.[1];
  assert.ok(name, 'the test names its operations');
  await eventually(async () => (await page.getByRole('tab', { selected: true }).innerText()).trim() === name, `the tab to be named ${name}`);
}

/**
 * Types a document into the query editor, runs it, and returns the JSON the browser got back.
 * @param {string} document
 */
async function run(document) {
  await typeOperation(document);
  // On a loaded machine a click that lands while GraphiQL is still busy (its schema, the
  // editor) can send nothing: click again, at most three times, then fail.
  for (let attempt = 1; ; attempt += 1) {
    const answer = page.waitForResponse((r) => r.url() === GRAPHIQL_URL && r.request().method() === 'POST', { timeout: 15_000 });
    await page.locator('.graphiql-execute-button').click();
    try {
      return await (await answer).json();
    } catch (error) {
      if (attempt === 3) throw error;
    }
  }
}

describe('GraphiQL, offline', { timeout: 120_000 }, () => {
  before(async () => {
    browser = await launchBrowser();
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    await context.route('**/*', (route) => {
      const url = new URL(route.request().url());
      if (LOOPBACK.has(url.hostname)) return route.continue();
      leftTheMachine.push(url.href);
      return route.abort('internetdisconnected');
    });
    page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      if (/Content[- ]Security[- ]Policy/i.test(m.text())) cspViolations.push(m.text());
    });
  });

  after(async () => {
    await browser?.close();
  });

  test('loads from the service itself, under its security headers', async () => {
    const response = await page.goto(GRAPHIQL_URL);
    assert.ok(response);
    assert.equal(response.status(), 200);
    await queryEditor()
      .locator('.view-lines')
      .waitFor({ timeout: 30_000 })
      .catch((e) => assert.fail(`GraphiQL did not load (requests off the machine: ${leftTheMachine.join(', ') || 'none'}): ${e}`));
    assert.deepEqual(leftTheMachine, [], 'no request may leave the machine');
    const headers = response.headers();
    assert.match(headers['content-security-policy'] ?? '', /script-src 'self'/);
    assert.match(headers['content-security-policy'] ?? '', /frame-ancestors 'none'/);
    assert.equal(headers['x-content-type-options'], 'nosniff');
    assert.ok(headers['referrer-policy']);
    // The page explains the headers pane, and the first tab holds the README's walk-through.
    assert.match(await page.getByTestId('graphiql-help').innerText(), /\{"Authorization": "Bearer <accessToken>"\}/);
    assert.match(await queryEditor().innerText(), /mutation\s+Login/);
    await page.screenshot({ path: join(SCREENSHOTS, 'graphiql-walkthrough.png') });
  });

  test('runs login', async () => {
    const body = await run(gql`mutation Login { login(input: {email: "${ALICE.email}", password: "${ALICE.password}"}) { accessToken role } }`);
    assert.equal(body.errors, undefined, JSON.stringify(body.errors));
    assert.equal(body.data.login.role, 'USER');
    await eventually(async () => (await responseText()).includes('"accessToken"'), 'the token in the response pane');
    await page.screenshot({ path: join(SCREENSHOTS, 'graphiql-login.png') });
    token = body.data.login.accessToken;
  });

  test('runs a query with the token in the headers pane', async () => {
    assert.ok(token, 'login ran first');
    await replaceText(headersEditor(), `{"Authorization": "Bearer ${token}"}`);
    const body = await run(gql`query Me { me { email role } }`);
    assert.equal(body.errors, undefined, JSON.stringify(body.errors));
    assert.deepEqual(body.data.me, { email: ALICE.email, role: 'USER' });
    await eventually(async () => (await responseText()).includes(ALICE.email), 'the email in the response pane');
    // The explorer plugin, built from the schema the page introspected.
    await page.getByRole('button', { name: 'Show GraphiQL Explorer' }).click();
    await page.locator('.graphiql-plugin').getByText('me', { exact: true }).first().waitFor();
    await page.screenshot({ path: join(SCREENSHOTS, 'graphiql-query.png') });
    await page.getByRole('button', { name: 'Hide GraphiQL Explorer' }).click();
  });

  test('a subscription receives the change made from outside', async () => {
    assert.ok(token);
    const created = await graphqlFetch(CREATE_ORDER, { input: { clientToken: randomToken(), items: [{ sku: 'WIDGET-001', qty: 1 }] } }, token);
    const order = created.createOrder;

    const before = await liveSubscriptions();
    const opened = page.waitForEvent('websocket');
    await typeOperation(gql`subscription Watch { orderStatusChanged(orderId: "${order.id}") { orderId previousStatus status version } }`);
    await page.locator('.graphiql-execute-button').click();
    const ws = await opened;
    assert.equal(new URL(ws.url()).pathname, '/graphql');
    // The server counts a subscription once it is registered (and the token in connection_init
    // accepted): only then is a change sure to reach it.
    await eventually(async () => (await liveSubscriptions()) > before, 'the subscription to be registered', 15_000);

    const admin = await apiLogin(ADMIN);
    await graphqlFetch(UPDATE_STATUS, { input: { id: order.id, status: 'CANCELLED', version: order.version } }, admin);

    await eventually(async () => {
      const text = await responseText();
      return text.includes('"CANCELLED"') && text.includes(`"${order.id}"`);
    }, 'the event in the response pane', 15_000);
    await page.screenshot({ path: join(SCREENSHOTS, 'graphiql-subscription.png') });
  });

  test('nothing left the machine, no CSP violation, no page error', () => {
    assert.deepEqual(leftTheMachine, []);
    assert.deepEqual(cspViolations, []);
    assert.deepEqual(pageErrors, []);
  });
});
