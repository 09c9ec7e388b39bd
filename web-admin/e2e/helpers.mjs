// @ts-check
// Shared helpers for the admin end-to-end tests: a browser, GraphQL over fetch, signed webhooks.
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const BASE_URL = (process.env.BASE_URL ?? 'http://127.0.0.1:8765').replace(/\/$/, '');
export const ADMIN_URL = `${BASE_URL}/admin/`;
export const WEBHOOK_SECRET = process.env.WEBHOOK_SECRET ?? '';
export const SCREENSHOTS = join(dirname(fileURLToPath(import.meta.url)), 'screenshots');

export const ADMIN = { email: 'admin@example.com', password: 'admin-pass-123' };
export const ALICE = { email: 'alice@example.com', password: 'alice-pass-123' };

/** A tag that only marks a GraphQL document, so `npm run check:ops` validates it. */
export const gql = String.raw;

const LOGIN = gql`
  mutation E2eLogin($input: LoginInput!) {
    login(input: $input) {
      accessToken
      role
    }
  }
`;

export const CREATE_ORDER = gql`
  mutation E2eCreateOrder($input: CreateOrderInput!) {
    createOrder(input: $input) {
      id
      status
      version
    }
  }
`;

export const INITIATE_PAYMENT = gql`
  mutation E2eInitiatePayment($input: InitiatePaymentInput!) {
    initiatePayment(input: $input) {
      id
      status
    }
  }
`;

export const UPDATE_STATUS = gql`
  mutation E2eUpdateOrderStatus($input: UpdateOrderStatusInput!) {
    updateOrderStatus(input: $input) {
      id
      status
      version
    }
  }
`;

export const ORDER = gql`
  query E2eOrder($id: ID!) {
    order(id: $id) {
      id
      status
      version
      payment {
        id
        status
      }
    }
  }
`;

/**
 * POST /graphql; throws with the error codes unless the answer has data and no errors.
 * @param {string} query @param {Record<string, unknown>} variables @param {string} [token]
 * @returns {Promise<any>}
 */
export async function graphqlFetch(query, variables, token) {
  /** @type {Record<string, string>} */
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${BASE_URL}/graphql`, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  const text = await res.text();
  /** @type {any} */
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`POST /graphql answered ${res.status} with non-JSON: ${text.slice(0, 200)}`);
  }
  if (body.errors?.length) {
    const codes = body.errors.map((/** @type {any} */ e) => `${e.extensions?.code}: ${e.message}`).join('; ');
    throw new Error(`GraphQL errors: ${codes}`);
  }
  return body.data;
}

/** @param {{email: string, password: string}} who @returns {Promise<string>} */
export async function apiLogin(who) {
  const data = await graphqlFetch(LOGIN, { input: who });
  return data.login.accessToken;
}

/**
 * POST /payments/webhook signed as the provider would: HMAC-SHA256 of the exact raw body.
 * @param {Record<string, unknown>} payload
 */
export async function sendWebhook(payload) {
  assert.ok(WEBHOOK_SECRET, 'WEBHOOK_SECRET must be set to sign the webhook');
  const raw = Buffer.from(JSON.stringify(payload), 'utf8');
  const signature = createHmac('sha256', WEBHOOK_SECRET).update(raw).digest('hex');
  const res = await fetch(`${BASE_URL}/payments/webhook`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-signature': `sha256=${signature}` },
    body: raw,
  });
  return { status: res.status, body: await res.text() };
}

export const randomToken = () => `e2e-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;

export async function launchBrowser() {
  mkdirSync(SCREENSHOTS, { recursive: true });
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * Collects the Content-Security-Policy violations that chromium reports on the console of
 * any page of any context the browser opens from now on.
 * @param {import('playwright-core').Browser} browser @returns {string[]}
 */
export function watchCsp(browser) {
  /** @type {string[]} */
  const violations = [];
  const newContext = browser.newContext.bind(browser);
  browser.newContext = async (options) => {
    const context = await newContext(options);
    context.on('console', (m) => {
      if (/Content[- ]Security[- ]Policy/i.test(m.text())) violations.push(`${m.location().url}: ${m.text()}`);
    });
    return context;
  };
  return violations;
}

/**
 * Asserts the security headers of a page's answer (server/headers.py).
 * @param {Record<string, string>} headers
 */
export function assertSecurityHeaders(headers) {
  const csp = headers['content-security-policy'] ?? '';
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /script-src 'self'(;|$)/, 'no inline or foreign script');
  assert.match(csp, /frame-ancestors 'none'/);
  assert.equal(headers['x-content-type-options'], 'nosniff');
  assert.equal(headers['referrer-policy'], 'no-referrer');
}

/**
 * Signs in through the login form at /admin/<path> (the orders list unless said otherwise).
 * @param {import('playwright-core').Page} page @param {{email: string, password: string}} who @param {string} [path]
 */
export async function uiLogin(page, who = ADMIN, path = 'orders') {
  await page.goto(`${ADMIN_URL}${path}`);
  await page.getByLabel('Email').fill(who.email);
  await page.getByLabel('Password').fill(who.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/** @param {import('playwright-core').Page} page */
export async function waitForRows(page) {
  await page.locator('[data-testid^="order-row-"]').first().waitFor({ state: 'visible', timeout: 15_000 });
  await page.locator('[data-testid="skeleton-row"]').first().waitFor({ state: 'detached', timeout: 15_000 });
}

/**
 * The rows on screen, read from their data attributes.
 * @param {import('playwright-core').Page} page
 * @returns {Promise<{id: string, status: string, version: number, text: string}[]>}
 */
export async function rows(page) {
  return page.locator('[data-testid^="order-row-"]').evaluateAll((trs) =>
    trs.map((tr) => ({
      id: (tr.getAttribute('data-testid') ?? '').replace('order-row-', ''),
      status: tr.getAttribute('data-status') ?? '',
      version: Number(tr.getAttribute('data-version')),
      text: (/** @type {HTMLElement} */ (tr)).innerText,
    })),
  );
}

/**
 * Polls until fn returns a truthy value (returned) or the time runs out.
 * @template T @param {() => Promise<T>} fn @param {string} what @param {number} [timeout]
 * @returns {Promise<T>}
 */
export async function eventually(fn, what, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  /** @type {unknown} */
  let last;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
      last = value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** @typedef {Awaited<ReturnType<typeof rows>>} Rows */

/**
 * Waits until the list is not loading and the rows on screen satisfy the check.
 * @param {import('playwright-core').Page} page @param {(r: Rows) => boolean} check @param {string} what
 * @returns {Promise<Rows>}
 */
export async function rowsWhere(page, check, what) {
  return /** @type {Promise<Rows>} */ (eventually(async () => {
    const busy = await page.locator('[aria-busy="true"]').count();
    if (busy) return null;
    const list = await rows(page);
    return check(list) ? list : null;
  }, what, 15_000));
}

const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/**
 * Runs axe-core (npm) in the page and returns its serious and critical violations. The
 * source goes in through the DevTools protocol (page.evaluate), which the page's
 * Content-Security-Policy does not govern, so the policy stays as users get it.
 * @param {import('playwright-core').Page} page
 * @returns {Promise<{id: string, impact: string, help: string, nodes: string[]}[]>}
 */
export async function axeViolations(page) {
  await page.evaluate(`${AXE_SOURCE}\n;void 0`);
  const result = await page.evaluate(async () => {
    // @ts-ignore axe is the global the script above defined
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((/** @type {any} */ v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.slice(0, 5).map((/** @type {any} */ n) => `${n.target.join(' ')}: ${n.failureSummary}`),
    }));
  });
  return result.filter((/** @type {any} */ v) => v.impact === 'serious' || v.impact === 'critical');
}
