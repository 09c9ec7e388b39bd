// @ts-check
// End-to-end tests of the admin UI against a live order service (BASE_URL, WEBHOOK_SECRET).
// Run with scripts/admin-e2e from the repository root, or `npm run e2e` against a running server.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  ADMIN,
  ADMIN_URL,
  ALICE,
  BASE_URL,
  CREATE_ORDER,
  INITIATE_PAYMENT,
  ORDER,
  SCREENSHOTS,
  UPDATE_STATUS,
  apiLogin,
  assertSecurityHeaders,
  eventually,
  graphqlFetch,
  launchBrowser,
  randomToken,
  rows,
  rowsWhere,
  sendWebhook,
  uiLogin,
  waitForRows,
  watchCsp,
} from './helpers.mjs';

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 812 };

/** @type {import('playwright-core').Browser} */
let browser;
/** @type {import('playwright-core').BrowserContext} */
let context;
/** @type {import('playwright-core').Page} */
let page;
/** @type {string[]} */
const pageErrors = [];
/** @type {string[]} */
let cspViolations = [];

/** @param {import('playwright-core').Page} p */
const toast = (p, /** @type {string | RegExp} */ text) => p.locator('[data-testid="toast"]', { hasText: text });
/** @param {import('playwright-core').Page} p */
const liveIndicator = (p) => p.getByTestId('live-indicator');

/** @param {import('playwright-core').Page} p @param {string} q */
async function search(p, q) {
  await p.getByLabel('Search').fill(q);
  await eventually(async () => new URL(p.url()).searchParams.get('q') === (q || null), `q=${q} in the URL (debounced)`);
}

/** @param {import('playwright-core').Page} p @param {string} label */
async function filterStatus(p, label) {
  await p.getByLabel('Status', { exact: true }).selectOption({ label });
}

describe('admin UI', { timeout: 100_000 }, () => {
  before(async () => {
    const health = await fetch(`${BASE_URL}/health`).catch((e) => e);
    assert.ok(health instanceof Response && health.ok, `no healthy server at ${BASE_URL}: ${health instanceof Response ? health.status : health}`);
    browser = await launchBrowser();
    cspViolations = watchCsp(browser);
    context = await browser.newContext({ viewport: DESKTOP });
    page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
  });

  after(async () => {
    await browser?.close();
  });

  test('/admin carries the security headers', async () => {
    for (const path of ['/admin/', '/admin/orders?page=2', `/admin/${randomToken()}.js`]) {
      const res = await fetch(`${BASE_URL}${path}`);
      assert.equal(res.status, 200, path);
      assertSecurityHeaders(Object.fromEntries(res.headers));
    }
  });

  test('a USER cannot sign in to the admin', async () => {
    const ctx = await browser.newContext({ viewport: DESKTOP });
    try {
      const p = await ctx.newPage();
      await uiLogin(p, ALICE);
      const error = p.getByTestId('login-error');
      await error.waitFor();
      assert.equal((await error.innerText()).trim(), 'This account is not an admin');
      assert.equal(await p.locator('[data-testid="orders-table"]').count(), 0);
      assert.equal(await p.evaluate(() => Object.keys(sessionStorage).filter((k) => k.includes('token')).length), 0);
    } finally {
      await ctx.close();
    }
  });

  test('wrong password is refused', async () => {
    const ctx = await browser.newContext({ viewport: DESKTOP });
    try {
      const p = await ctx.newPage();
      await uiLogin(p, { email: ADMIN.email, password: 'not-the-password' });
      await p.getByTestId('login-error').waitFor();
      assert.match(await p.getByTestId('login-error').innerText(), /wrong email or password/i);
    } finally {
      await ctx.close();
    }
  });

  test('an admin signs in and sees the orders, live', async () => {
    await uiLogin(page, ADMIN);
    await waitForRows(page);
    const list = await rows(page);
    assert.equal(list.length, 10, 'first page holds 10 orders');
    assert.match(await page.getByTestId('orders-summary').innerText(), /Showing 1–10 of \d+/);
    await eventually(async () => (await liveIndicator(page).innerText()).includes('Live'), 'the live indicator to say Live');
    // Money, items and status render as a person expects.
    const first = list[0];
    assert.ok(first);
    assert.match(first.text, /\$\d+\.\d{2}/);
    assert.match(first.text, /\d+× [A-Z]+-\d+/);
    await page.screenshot({ path: join(SCREENSHOTS, 'orders-desktop.png'), fullPage: true });
  });

  test('pages to page 2', async () => {
    const firstPage = (await rows(page)).map((r) => r.id);
    await page.getByRole('button', { name: 'Page 2', exact: true }).click();
    const second = await rowsWhere(page, (l) => l.length > 0 && !l.some((r) => firstPage.includes(r.id)), 'page 2 rows');
    assert.equal(await page.getByRole('button', { name: 'Page 2', exact: true }).getAttribute('aria-current'), 'page');
    assert.match(await page.getByTestId('orders-summary').innerText(), /Showing 11–\d+ of/);
    assert.ok(second.length > 0);
    // "Next" follows page 2's nextCursor (`after`): page 3, as its number would give it.
    /** @type {Record<string, unknown>[]} */
    const sent = [];
    /** @param {import('playwright-core').Request} r */
    const onRequest = (r) => {
      const body = r.method() === 'POST' && r.url().endsWith('/graphql') ? r.postDataJSON() : null;
      if (body && body.operationName === 'AdminOrders') sent.push(body.variables);
    };
    page.on('request', onRequest);
    const secondIds = second.map((r) => r.id);
    await page.getByRole('button', { name: 'Next page' }).click();
    const third = await rowsWhere(page, (l) => l.length > 0 && !l.some((r) => secondIds.includes(r.id)), 'page 3 rows');
    page.off('request', onRequest);
    assert.equal(await page.getByRole('button', { name: 'Page 3', exact: true }).getAttribute('aria-current'), 'page');
    assert.ok(sent.some((v) => v.page === 3 && typeof v.after === 'string' && v.after.length > 0), 'Next sent a cursor');
    await page.getByRole('button', { name: 'Page 1', exact: true }).click();
    await page.getByRole('button', { name: 'Page 3', exact: true }).click();
    await rowsWhere(page, (l) => l.map((r) => r.id).join() === third.map((r) => r.id).join(), 'page 3 by number, the same rows');
    await page.getByRole('button', { name: 'Page 2', exact: true }).click();
    await rowsWhere(page, (l) => l.map((r) => r.id).join() === secondIds.join(), 'page 2 again');
    // Page size: 25 per page.
    await page.getByLabel('Per page').selectOption('25');
    await rowsWhere(page, (l) => l.length > 10, '25 rows per page');
    await page.getByLabel('Per page').selectOption('10');
    await rowsWhere(page, (l) => l.length === 10, '10 rows per page');
  });

  test('searches by SKU and by customer email', async () => {
    await search(page, 'GADGET-002');
    const bySku = await rowsWhere(page, (l) => l.length > 0 && l.every((r) => r.text.includes('GADGET-002')), 'only GADGET-002 orders');
    assert.ok(bySku.length > 0);

    await search(page, 'alice@example.com');
    const byEmail = await rowsWhere(page, (l) => l.length > 0 && l.every((r) => r.text.includes('alice@example.com')), 'only alice orders');
    assert.ok(byEmail.length > 0);

    await search(page, 'no-such-thing-zzz');
    await page.getByText('No orders match').waitFor();
    await search(page, '');
    await rowsWhere(page, (l) => l.length === 10, 'all orders again');
  });

  test('filters by status', async () => {
    await filterStatus(page, 'Shipped');
    const shipped = await rowsWhere(page, (l) => l.length > 0 && l.every((r) => r.status === 'SHIPPED'), 'only SHIPPED rows');
    assert.ok(shipped.length > 0);
    await filterStatus(page, 'Delivered');
    const delivered = await rowsWhere(page, (l) => l.length > 0 && l.every((r) => r.status === 'DELIVERED'), 'only DELIVERED rows');
    // A final status offers no change.
    const id = delivered[0]?.id;
    assert.ok(id);
    assert.equal(await page.getByTestId(`status-menu-${id}`).count(), 0);
    await filterStatus(page, 'All statuses');
    await rowsWhere(page, (l) => new Set(l.map((r) => r.status)).size > 1, 'mixed statuses again');
  });

  test('changes the status of a PENDING order from its row', async () => {
    await filterStatus(page, 'Pending');
    const pending = await rowsWhere(page, (l) => l.length > 0 && l.every((r) => r.status === 'PENDING'), 'PENDING rows');
    const target = pending[0];
    assert.ok(target);
    const row = page.getByTestId(`order-row-${target.id}`);
    await page.getByTestId(`status-menu-${target.id}`).click();
    const menu = page.getByRole('menu');
    const offered = await menu.getByRole('menuitem').evaluateAll((els) => els.map((e) => e.getAttribute('data-status')));
    assert.deepEqual(offered, ['PAID', 'CANCELLED'], 'PENDING may become PAID or CANCELLED only');
    await page.screenshot({ path: join(SCREENSHOTS, 'status-menu-desktop.png') });
    await menu.getByRole('menuitem', { name: /Mark as paid/ }).click();
    await toast(page, `Order #${target.id} is now paid`).waitFor();
    await page.locator(`[data-testid="order-row-${target.id}"][data-status="PAID"]`).waitFor();
    assert.equal(Number(await row.getAttribute('data-version')), target.version + 1);
    const server = await graphqlFetch(ORDER, { id: target.id }, await apiLogin(ADMIN));
    assert.equal(server.order.status, 'PAID');
    assert.equal(server.order.version, target.version + 1);
    await filterStatus(page, 'All statuses');
  });

  test('a stale version shows the conflict toast and reloads the order', async () => {
    // A second admin tab whose live feed is cut, so it keeps the old version on screen.
    const ctx = await browser.newContext({ viewport: DESKTOP });
    try {
      await ctx.routeWebSocket(/\/graphql/, () => {
        /* never connect: no live updates reach this tab */
      });
      const p = await ctx.newPage();
      await uiLogin(p, ADMIN);
      await waitForRows(p);
      await filterStatus(p, 'Pending');
      const pending = await rowsWhere(p, (l) => l.length > 0 && l.every((r) => r.status === 'PENDING'), 'PENDING rows');
      const target = pending[0];
      assert.ok(target);
      // Show that one order whatever its status, so the reload after the conflict keeps it on screen.
      await filterStatus(p, 'All statuses');
      await search(p, target.id);
      await rowsWhere(p, (l) => l.some((r) => r.id === target.id), `order #${target.id} found by id`);
      assert.notEqual(await liveIndicator(p).getAttribute('data-state'), 'live');

      const token = await apiLogin(ADMIN);
      const changed = await graphqlFetch(UPDATE_STATUS, { input: { id: target.id, status: 'CANCELLED', version: target.version } }, token);
      assert.equal(changed.updateOrderStatus.version, target.version + 1);

      await p.getByTestId(`status-menu-${target.id}`).click();
      await p.getByRole('menuitem', { name: /Mark as paid/ }).click();
      await toast(p, `Order #${target.id} was changed by someone else — reloaded`).waitFor();
      // The row now shows what the server holds.
      await p.locator(`[data-testid="order-row-${target.id}"][data-status="CANCELLED"][data-version="${target.version + 1}"]`).waitFor();
    } finally {
      await ctx.close();
    }
  });

  test('a row turns PAID live after a signed payment webhook', async () => {
    const alice = await apiLogin(ALICE);
    const created = await graphqlFetch(CREATE_ORDER, { input: { items: [{ sku: 'WIDGET-001', qty: 1 }], clientToken: randomToken() } }, alice);
    const orderId = created.createOrder.id;
    assert.equal(created.createOrder.status, 'PENDING');
    const payment = (await graphqlFetch(INITIATE_PAYMENT, { input: { orderId } }, alice)).initiatePayment;
    assert.match(payment.id, /^pay_/);

    // Newest first: the new order is on page 1 once the list is read again.
    await page.goto(`${ADMIN_URL}orders`);
    const row = page.locator(`[data-testid="order-row-${orderId}"]`);
    await row.waitFor({ timeout: 15_000 });
    assert.equal(await row.getAttribute('data-status'), 'PENDING');
    await eventually(async () => (await liveIndicator(page).getAttribute('data-state')) === 'live', 'the live connection');
    await page.evaluate(() => Object.assign(window, { __e2eNoReload: true }));

    const hook = await sendWebhook({ payment_id: payment.id, order_id: orderId, status: 'SUCCESS' });
    assert.equal(hook.status, 200, `webhook answered ${hook.status}: ${hook.body}`);

    await page.locator(`[data-testid="order-row-${orderId}"][data-status="PAID"]`).waitFor({ timeout: 10_000 });
    assert.equal(await row.getAttribute('data-version'), String(created.createOrder.version + 1));
    assert.equal(await page.evaluate(() => /** @type {any} */ (window).__e2eNoReload), true, 'the page was not reloaded');

    // The drawer lists the event seen this session and the now-succeeded payment.
    await row.getByRole('button', { name: `Details of order #${orderId}` }).click();
    const drawer = page.getByTestId('order-drawer');
    await drawer.waitFor();
    await drawer.getByTestId('drawer-events').getByText('Paid').waitFor();
    await drawer.getByTestId('drawer-payment').getByText('Succeeded').waitFor({ timeout: 10_000 });
    assert.match(await drawer.getByTestId('drawer-payment').innerText(), new RegExp(payment.id));
    await page.screenshot({ path: join(SCREENSHOTS, 'order-drawer-desktop.png') });
    await page.keyboard.press('Escape');
    await drawer.waitFor({ state: 'detached' });
  });

  test('the live feed reconnects by itself and keeps updating rows', async () => {
    const ctx = await browser.newContext({ viewport: DESKTOP });
    try {
      /** @type {{page: import('playwright-core').WebSocketRoute, server: import('playwright-core').WebSocketRoute}[]} */
      const sockets = [];
      // Pass the websocket through untouched, keeping a handle to cut it.
      await ctx.routeWebSocket(/\/graphql/, (ws) => {
        sockets.push({ page: ws, server: ws.connectToServer() });
      });
      const p = await ctx.newPage();
      await uiLogin(p, ADMIN);
      await waitForRows(p);
      await eventually(async () => (await liveIndicator(p).getAttribute('data-state')) === 'live', 'Live');

      const cut = sockets.at(-1);
      assert.ok(cut);
      await cut.server.close({ code: 1012, reason: 'e2e: service restart' });
      await cut.page.close({ code: 1012, reason: 'e2e: service restart' });
      await eventually(async () => (await liveIndicator(p).innerText()).includes('Reconnecting…'), 'Reconnecting… after the cut', 5_000);
      await eventually(async () => (await liveIndicator(p).getAttribute('data-state')) === 'live', 'Live again', 15_000);
      assert.ok(sockets.length >= 2, 'a new websocket was opened');

      // Events flow on the new connection: a change made elsewhere shows up in this tab.
      await filterStatus(p, 'Pending');
      const pending = await rowsWhere(p, (l) => l.length > 0 && l.every((r) => r.status === 'PENDING'), 'PENDING rows');
      const target = pending[0];
      assert.ok(target);
      await graphqlFetch(UPDATE_STATUS, { input: { id: target.id, status: 'PAID', version: target.version } }, await apiLogin(ADMIN));
      await p.locator(`[data-testid="order-row-${target.id}"][data-status="PAID"][data-version="${target.version + 1}"]`).waitFor({ timeout: 10_000 });
    } finally {
      await ctx.close();
    }
  });

  test('events made while the socket is cut arrive once it is back: new orders, changes, each once', async () => {
    const ctx = await browser.newContext({ viewport: DESKTOP });
    try {
      /** @type {{page: import('playwright-core').WebSocketRoute, server: import('playwright-core').WebSocketRoute}[]} */
      const sockets = [];
      let blocked = false;
      await ctx.routeWebSocket(/\/graphql/, (ws) => {
        if (blocked) {
          void ws.close({ code: 1012, reason: 'e2e: still cut' });
          return;
        }
        sockets.push({ page: ws, server: ws.connectToServer() });
      });
      const p = await ctx.newPage();
      await uiLogin(p, ADMIN);
      await waitForRows(p);
      await eventually(async () => (await liveIndicator(p).getAttribute('data-state')) === 'live', 'Live');
      await p.evaluate(() => Object.assign(window, { __e2eNoReload: true }));
      const admin = await apiLogin(ADMIN);
      // Customers take turns: each has an order budget per minute.
      const customers = [await apiLogin({ email: 'bob@example.com', password: 'bob-pass-123' }), await apiLogin(ALICE), admin];
      let turn = 0;
      const newOrder = async () =>
        (
          await graphqlFetch(
            CREATE_ORDER,
            { input: { items: [{ sku: 'WIDGET-001', qty: 1 }], clientToken: randomToken() } },
            customers[turn++ % customers.length],
          )
        ).createOrder;

      // One event before the cut, so the feed has a cursor to resume from: a new order on top.
      const first = await newOrder();
      await p.locator(`[data-testid="order-row-${first.id}"]`).waitFor({ timeout: 10_000 });

      // Cut the socket and keep it cut.
      blocked = true;
      for (const s of sockets.splice(0)) {
        await s.server.close({ code: 1012, reason: 'e2e: cut' });
        await s.page.close({ code: 1012, reason: 'e2e: cut' });
      }
      await eventually(async () => (await liveIndicator(p).innerText()).includes('Reconnecting…'), 'Reconnecting… after the cut', 5_000);

      // Meanwhile: three new orders, two changes of orders on screen.
      const created = [await newOrder(), await newOrder(), await newOrder()];
      const changed = [first, created[0]];
      await graphqlFetch(UPDATE_STATUS, { input: { id: first.id, status: 'PAID', version: 1 } }, admin);
      await graphqlFetch(UPDATE_STATUS, { input: { id: created[0].id, status: 'CANCELLED', version: 1 } }, admin);

      // Restore: all five show, without a reload, none twice.
      blocked = false;
      await eventually(async () => (await liveIndicator(p).getAttribute('data-state')) === 'live', 'Live again', 20_000);
      for (const o of created) await p.locator(`[data-testid="order-row-${o.id}"]`).waitFor({ timeout: 10_000 });
      await p.locator(`[data-testid="order-row-${first.id}"][data-status="PAID"][data-version="2"]`).waitFor({ timeout: 10_000 });
      await p.locator(`[data-testid="order-row-${created[0].id}"][data-status="CANCELLED"][data-version="2"]`).waitFor({ timeout: 10_000 });
      const onScreen = await rows(p);
      assert.equal(new Set(onScreen.map((r) => r.id)).size, onScreen.length, 'no row twice');
      assert.deepEqual(onScreen.slice(0, 4).map((r) => r.id), [...created.map((o) => o.id)].reverse().concat(first.id), 'newest first on top');
      assert.equal(await p.evaluate(() => /** @type {any} */ (window).__e2eNoReload), true, 'the page was not reloaded');

      // The drawer's timeline: the stored history, each event once, live ones appended.
      for (const o of changed) {
        await p.getByRole('button', { name: `Details of order #${o.id}` }).click();
        const drawer = p.getByTestId('order-drawer');
        const items = drawer.getByTestId('timeline-event');
        await eventually(async () => (await items.count()) === 2, `two events of order ${o.id}`);
        const kinds = await items.evaluateAll((els) => els.map((e) => e.getAttribute('data-kind')));
        assert.deepEqual(kinds, ['STATUS_CHANGED', 'CREATED']);
        const cursors = await items.evaluateAll((els) => els.map((e) => e.getAttribute('data-cursor')));
        assert.equal(new Set(cursors).size, 2);
        if (o === first) await p.screenshot({ path: join(SCREENSHOTS, 'order-timeline-desktop.png') });
        await p.keyboard.press('Escape');
        await drawer.waitFor({ state: 'detached' });
      }
      // A change seen live while the drawer is open is appended once.
      await p.getByRole('button', { name: `Details of order #${first.id}` }).click();
      const drawer = p.getByTestId('order-drawer');
      await eventually(async () => (await drawer.getByTestId('timeline-event').count()) === 2, 'the timeline');
      await graphqlFetch(UPDATE_STATUS, { input: { id: first.id, status: 'SHIPPED', version: 2 } }, admin);
      await eventually(async () => (await drawer.getByTestId('timeline-event').count()) === 3, 'the live event appended');
      await p.keyboard.press('Escape');
      await drawer.waitFor({ state: 'detached' });

      // Filtered: a new order is counted in a pill instead; "show" brings it on top of page 1.
      await filterStatus(p, 'Shipped');
      await rowsWhere(p, (l) => l.every((r) => r.status === 'SHIPPED'), 'SHIPPED rows');
      const later = await newOrder();
      const pill = p.getByTestId('new-orders-pill');
      await pill.waitFor({ timeout: 10_000 });
      assert.match(await pill.innerText(), /1 new order/);
      await p.screenshot({ path: join(SCREENSHOTS, 'new-orders-pill-desktop.png') });
      await pill.click();
      await p.locator(`[data-testid="order-row-${later.id}"]`).waitFor({ timeout: 10_000 });
      assert.equal((await rows(p))[0]?.id, later.id);
      await pill.waitFor({ state: 'detached' });
    } finally {
      await ctx.close();
    }
  });

  test('the detail drawer works from the keyboard', async () => {
    await waitForRows(page);
    const first = (await rows(page))[0];
    assert.ok(first);
    const trigger = page.getByRole('button', { name: `Details of order #${first.id}` });
    await trigger.focus();
    await page.keyboard.press('Enter');
    const drawer = page.getByRole('dialog');
    await drawer.waitFor();
    assert.equal(await drawer.evaluate((d) => d.contains(document.activeElement)), true, 'focus moves into the drawer');
    assert.match(await drawer.innerText(), /Lines[\s\S]*Amount[\s\S]*Payment[\s\S]*History/);
    await page.keyboard.press('Escape');
    await drawer.waitFor({ state: 'detached' });
    assert.equal(await trigger.evaluate((b) => b === document.activeElement), true, 'focus returns to the row');
  });

  test('is usable on a phone', async () => {
    const ctx = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    try {
      const p = await ctx.newPage();
      await uiLogin(p, ADMIN);
      await waitForRows(p);
      // For the screenshot only: the live feed has tests of its own.
      await eventually(async () => (await liveIndicator(p).getAttribute('data-state')) === 'live', 'Live on the phone', 5_000).catch(() => undefined);
      const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `no sideways scrolling at 375px (overflow ${overflow}px)`);
      await p.screenshot({ path: join(SCREENSHOTS, 'orders-phone.png'), fullPage: false });
      await p.screenshot({ path: join(SCREENSHOTS, 'orders-phone-full.png'), fullPage: true });
    } finally {
      await ctx.close();
    }
  });

  test('an invalid token sends the admin back to sign in', async () => {
    const ctx = await browser.newContext({ viewport: DESKTOP });
    try {
      const p = await ctx.newPage();
      await uiLogin(p, ADMIN);
      await waitForRows(p);
      // Keep the claims (so exp is in the future) but break the signature: the server says UNAUTHENTICATED.
      await p.evaluate(() => {
        const key = Object.keys(sessionStorage).find((k) => k.endsWith('.token'));
        if (!key) throw new Error('no token in sessionStorage');
        sessionStorage.setItem(key, `${sessionStorage.getItem(key)}broken`);
      });
      await p.reload();
      const flash = p.getByTestId('login-flash');
      await flash.waitFor();
      assert.equal((await flash.innerText()).trim(), 'Your session expired, please sign in again');
      await p.getByLabel('Email').waitFor();
    } finally {
      await ctx.close();
    }
  });

  test('the session ends when the token expires', async () => {
    const ctx = await browser.newContext({ viewport: DESKTOP });
    try {
      const p = await ctx.newPage();
      await p.clock.install();
      await uiLogin(p, ADMIN);
      await waitForRows(p);
      const exp = await p.evaluate(() => {
        const token = Object.entries(sessionStorage).find(([k]) => k.endsWith('.token'))?.[1] ?? '';
        return JSON.parse(atob(token.split('.')[1]?.replace(/-/g, '+').replace(/_/g, '/') ?? '')).exp;
      });
      const now = await p.evaluate(() => Date.now());
      assert.ok(exp * 1000 > now, 'a fresh token is not expired');
      await p.clock.fastForward(exp * 1000 - now + 1_000);
      const flash = p.getByTestId('login-flash');
      await flash.waitFor({ timeout: 5_000 });
      assert.equal((await flash.innerText()).trim(), 'Your session expired, please sign in again');
    } finally {
      await ctx.close();
    }
  });

  test('signs out', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length === 0 || !Object.keys(sessionStorage).some((k) => k.endsWith('.token'))), true);
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  });

  test('the simulator page: post-redirect-get, under the same policy', async () => {
    const token = await apiLogin(ALICE);
    const created = await graphqlFetch(CREATE_ORDER, { input: { clientToken: randomToken(), items: [{ sku: 'WIDGET-001', qty: 1 }] } }, token);
    const payment = (await graphqlFetch(INITIATE_PAYMENT, { input: { orderId: created.createOrder.id } }, token)).initiatePayment;
    const ctx = await browser.newContext({ viewport: DESKTOP });
    try {
      const p = await ctx.newPage();
      const shown = await p.goto(`${BASE_URL}/payments/simulator/${payment.id}`);
      assert.ok(shown);
      assertSecurityHeaders(shown.headers());
      /** @type {string[]} */
      const posts = [];
      p.on('request', (r) => { if (r.method() === 'POST') posts.push(r.url()); });
      await p.getByRole('button', { name: 'Succeed' }).click();
      await p.locator('#webhook-result').waitFor();
      assert.match(await p.locator('#webhook-result').innerText(), /answered 200: processed/);
      assert.equal(new URL(p.url()).pathname, `/payments/simulator/${payment.id}`, 'redirected to the page (GET)');
      assert.match(await p.locator('#order-status').innerText(), /PAID · version 2/);
      await p.screenshot({ path: join(SCREENSHOTS, 'simulator-paid.png') });
      // A reload shows the result again and posts nothing.
      await p.reload();
      await p.locator('#webhook-result').waitFor();
      assert.equal(posts.length, 1, `one POST, not another on reload: ${posts.join(', ')}`);
      const order = (await graphqlFetch(ORDER, { id: created.createOrder.id }, token)).order;
      assert.deepEqual([order.status, order.version], ['PAID', 2]);
    } finally {
      await ctx.close();
    }
  });

  test('no page broke the Content-Security-Policy', () => {
    assert.deepEqual(cspViolations, []);
  });
});
