// @ts-check
// End-to-end tests of the back office pages (issue 17): dashboard, orders (sort, filters, URL),
// the order page, payments needing attention, products, dark mode; axe-core on every page,
// light and dark, desktop and 375 px. Screenshots land in ../docs/admin/ for docs/admin.md.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import {
  ADMIN,
  ADMIN_URL,
  ALICE,
  CREATE_ORDER,
  INITIATE_PAYMENT,
  UPDATE_STATUS,
  apiLogin,
  axeViolations,
  eventually,
  gql,
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
const DOCS = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'admin');

const PAGES = [
  { name: 'dashboard', path: '', ready: '[data-testid="orders-chart"]' },
  { name: 'orders', path: 'orders', ready: '[data-testid^="order-row-"]' },
  { name: 'order', path: 'orders/ORDER', ready: '[data-testid="order-lines"]' },
  { name: 'payments', path: 'payments', ready: '[data-testid^="dead-letter-"]' },
  { name: 'products', path: 'products', ready: '[data-testid^="product-"]' },
];

const E2E_ORDER_PAYMENT = gql`
  query E2eOrderPayment($id: ID!) {
    order(id: $id) {
      id
      status
      payment {
        id
        status
        needsRefund
      }
    }
  }
`;

const E2E_ORDERS_SORTED = gql`
  query E2eOrdersSorted($sort: OrderSort, $createdFrom: DateTime, $createdTo: DateTime, $q: String) {
    orders(sort: $sort, createdFrom: $createdFrom, createdTo: $createdTo, q: $q, limit: 10) {
      items {
        id
      }
      total
    }
  }
`;

const E2E_COUNTS = gql`
  query E2eCounts {
    paid: orders(status: PAID, limit: 1) {
      total
    }
    cancelled: orders(status: CANCELLED, limit: 1) {
      total
    }
    deadLetters: paymentDeadLetters(limit: 1) {
      total
    }
  }
`;

const E2E_PRODUCTS = gql`
  query E2eProducts {
    products {
      sku
      name
      priceCents
    }
  }
`;

/** @type {import('playwright-core').Browser} */
let browser;
/** @type {string[]} */
let csp = [];
/** @type {string[]} */
const pageErrors = [];
/** @type {string} */
let adminToken;
/** @type {string} */
let aliceToken;

/** @param {{viewport: {width: number, height: number}, dark?: boolean, path?: string}} o */
async function signedIn({ viewport, dark = false, path = '' }) {
  const phone = viewport.width < 500;
  const ctx = await browser.newContext({ viewport, colorScheme: dark ? 'dark' : 'light', ...(phone ? { deviceScaleFactor: 2, isMobile: true, hasTouch: true } : {}) });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await uiLogin(page, ADMIN, path);
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
  return { ctx, page };
}

/** A new PENDING order of alice's, through the API. */
async function newOrder() {
  const data = await graphqlFetch(CREATE_ORDER, { input: { clientToken: randomToken(), items: [{ sku: 'WIDGET-001', qty: 2 }] } }, aliceToken);
  return /** @type {string} */ (data.createOrder.id);
}

/** A PAID order (payment + signed SUCCESS webhook), then cancelled: its payment needs a refund. */
async function orderNeedingRefund() {
  const id = await newOrder();
  const payment = (await graphqlFetch(INITIATE_PAYMENT, { input: { orderId: id } }, aliceToken)).initiatePayment;
  const hook = await sendWebhook({ payment_id: payment.id, order_id: id, status: 'SUCCESS' });
  assert.equal(hook.status, 200, hook.body);
  const paid = await graphqlFetch(E2E_ORDER_PAYMENT, { id }, adminToken);
  assert.equal(paid.order.status, 'PAID');
  const cancelled = await graphqlFetch(UPDATE_STATUS, { input: { id, status: 'CANCELLED', version: 2 } }, adminToken).catch(async () => {
    const o = await graphqlFetch(gql`query E2eVersion($id: ID!) { order(id: $id) { version } }`, { id }, adminToken);
    return graphqlFetch(UPDATE_STATUS, { input: { id, status: 'CANCELLED', version: o.order.version } }, adminToken);
  });
  assert.equal(cancelled.updateOrderStatus.status, 'CANCELLED');
  return { id, paymentId: /** @type {string} */ (payment.id) };
}

/** @param {import('playwright-core').Page} page @param {string} what */
async function assertAccessible(page, what) {
  const violations = await axeViolations(page);
  assert.deepEqual(violations, [], `${what}: axe-core found serious or critical violations:\n${JSON.stringify(violations, null, 2)}`);
}

describe('back office pages', { timeout: 400_000 }, () => {
  before(async () => {
    browser = await launchBrowser();
    csp = watchCsp(browser);
    mkdirSync(DOCS, { recursive: true });
    adminToken = await apiLogin(ADMIN);
    aliceToken = await apiLogin(ALICE);
  });
  after(async () => {
    await browser?.close();
  });

  test('the dashboard: a chart of 30 days, counts by status, dead letters and refunds', async () => {
    const counts = await graphqlFetch(E2E_COUNTS, {}, adminToken);
    const { ctx, page } = await signedIn({ viewport: DESKTOP });
    try {
      assert.equal(new URL(page.url()).pathname, '/admin/');
      const chart = page.getByTestId('orders-chart');
      await chart.waitFor();
      const box = await chart.boundingBox();
      assert.ok(box && box.width > 300 && box.height > 150, `the chart is drawn (${JSON.stringify(box)})`);
      // The same figures in the chart's table for screen readers: 30 days, the demo data in them.
      const dayRows = page.locator('figure table tbody tr');
      assert.equal(await dayRows.count(), 30);
      const orders = await dayRows.evaluateAll((trs) => trs.reduce((n, tr) => n + Number(tr.children[1]?.textContent ?? 0), 0));
      assert.ok(orders > 0, 'the demo data shows in the last 30 days');
      await eventually(async () => (await page.locator('[data-testid="status-counts"] [data-status="PAID"]').innerText()) === String(counts.paid.total), 'the PAID count');
      assert.equal(await page.locator('[data-testid="status-counts"] [data-status="CANCELLED"]').innerText(), String(counts.cancelled.total));
      await eventually(async () => (await page.getByTestId('card-dead-letters').innerText()).includes(String(counts.deadLetters.total)), 'the dead letters count');
      await eventually(async () => /Refunds needed\s*\d+/.test(await page.getByTestId('card-refunds').innerText()), 'the refunds count');
      // A count links to the list filtered by its status; from there, the nav's Orders clears it.
      await page.getByTestId('status-counts').getByRole('link', { name: /Paid/ }).click();
      await rowsWhere(page, (l) => l.length > 0 && l.every((r) => r.status === 'PAID'), 'PAID orders only');
      assert.equal(new URL(page.url()).searchParams.get('status'), 'PAID');
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Orders' }).click();
      await rowsWhere(page, (l) => l.some((r) => r.status !== 'PAID'), 'every status again');
      assert.equal(await page.getByLabel('Status', { exact: true }).inputValue(), '');
    } finally {
      await ctx.close();
    }
  });

  test('nav, deep link to an order page and the back button', async () => {
    const { ctx, page } = await signedIn({ viewport: DESKTOP });
    try {
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Orders' }).click();
      await waitForRows(page);
      assert.equal(new URL(page.url()).pathname, '/admin/orders');
      const first = (await rows(page))[0];
      assert.ok(first);
      await page.getByRole('link', { name: `Order #${first.id} page` }).click();
      await page.getByTestId('order-lines').waitFor();
      assert.equal(new URL(page.url()).pathname, `/admin/orders/${first.id}`);
      await page.goBack();
      await waitForRows(page);
      assert.equal(new URL(page.url()).pathname, '/admin/orders');
      await page.goForward();
      await page.getByTestId('order-lines').waitFor();
      // A deep link opened afresh (reload) shows the same order.
      await page.reload();
      await page.getByTestId('order-lines').waitFor();
      assert.match(await page.getByRole('heading', { level: 1 }).innerText(), new RegExp(`#${first.id}`));
      await page.goto(`${ADMIN_URL}orders/999999999`);
      await page.getByTestId('order-missing').waitFor();
    } finally {
      await ctx.close();
    }
  });

  test('orders: sortable headers, date range and customer filters, kept in the URL', async () => {
    const { ctx, page } = await signedIn({ viewport: DESKTOP, path: 'orders' });
    try {
      await waitForRows(page);
      const ids = async (/** @type {Record<string, unknown>} */ vars) => (await graphqlFetch(E2E_ORDERS_SORTED, vars, adminToken)).orders.items.map((/** @type {any} */ o) => o.id).join(',');

      await page.getByTestId('sort-amount').click();
      await eventually(async () => new URL(page.url()).searchParams.get('sort') === 'AMOUNT_HIGH', 'sort=AMOUNT_HIGH in the URL');
      const high = await ids({ sort: 'AMOUNT_HIGH' });
      await rowsWhere(page, (l) => l.map((r) => r.id).join(',') === high, 'rows by amount, highest first');
      assert.match(await page.locator('th[aria-sort="descending"]').innerText(), /^Amount/i, 'aria-sort says which column sorts');
      await page.getByTestId('sort-amount').click();
      const low = await ids({ sort: 'AMOUNT_LOW' });
      await rowsWhere(page, (l) => l.map((r) => r.id).join(',') === low, 'rows by amount, lowest first');
      assert.equal(new URL(page.url()).searchParams.get('sort'), 'AMOUNT_LOW');
      await page.getByTestId('sort-order').click();
      await rowsWhere(page, (l) => true && l.length > 0, 'rows');
      assert.equal(new URL(page.url()).searchParams.get('sort'), null, 'NEWEST is the default, left out of the URL');
      await page.getByTestId('sort-order').click();
      const oldest = await ids({ sort: 'OLDEST' });
      await rowsWhere(page, (l) => l.map((r) => r.id).join(',') === oldest, 'rows oldest first');

      // Created between two UTC days, both included.
      const today = new Date().toISOString().slice(0, 10);
      const weekAgo = new Date(Date.now() - 7 * 86_400_000).toISOString().slice(0, 10);
      await page.getByLabel('Created from').fill(weekAgo);
      await page.getByLabel('to', { exact: true }).fill(today);
      await eventually(async () => new URL(page.url()).searchParams.get('from') === weekAgo && new URL(page.url()).searchParams.get('to') === today, 'from/to in the URL');
      const tomorrow = new Date(Date.parse(`${today}T00:00:00Z`) + 86_400_000).toISOString();
      const ranged = await ids({ sort: 'OLDEST', createdFrom: `${weekAgo}T00:00:00Z`, createdTo: tomorrow });
      await rowsWhere(page, (l) => l.map((r) => r.id).join(',') === ranged, 'rows created in the week');

      // The customer filter: only alice's orders.
      await page.getByLabel('Customer').fill(ALICE.email);
      await eventually(async () => new URL(page.url()).searchParams.get('customer') === ALICE.email, 'customer in the URL');
      const alices = await ids({ sort: 'OLDEST', createdFrom: `${weekAgo}T00:00:00Z`, createdTo: tomorrow, q: ALICE.email });
      const shown = await rowsWhere(page, (l) => l.map((r) => r.id).join(',') === alices, "alice's orders");
      assert.ok(shown.every((r) => r.text.includes(ALICE.email)));

      // A reload (or a shared link) keeps all of it.
      const url = page.url();
      await page.reload();
      await waitForRows(page);
      assert.equal(page.url(), url);
      await rowsWhere(page, (l) => l.map((r) => r.id).join(',') === alices, 'the same rows after a reload');
      assert.equal(await page.getByLabel('Customer').inputValue(), ALICE.email);
      assert.equal(await page.getByLabel('Created from').inputValue(), weekAgo);
    } finally {
      await ctx.close();
    }
  });

  test('the order page: cancelling asks first, then a refund is offered and made', async () => {
    const id = await newOrder();
    const payment = (await graphqlFetch(INITIATE_PAYMENT, { input: { orderId: id } }, aliceToken)).initiatePayment;
    assert.equal((await sendWebhook({ payment_id: payment.id, order_id: id, status: 'SUCCESS' })).status, 200);
    const { ctx, page } = await signedIn({ viewport: DESKTOP, path: `orders/${id}` });
    try {
      await page.getByTestId('order-lines').waitFor();
      await eventually(async () => (await page.locator('main [data-testid="status-badge"]').first().getAttribute('data-status')) === 'PAID', 'PAID');
      const menu = page.getByTestId(`status-menu-${id}`);
      // Enter opens the menu with the focus on its first item; ArrowDown moves it (issue 17's defect).
      await menu.focus();
      await page.keyboard.press('Enter');
      await eventually(async () => (await page.evaluate(() => document.activeElement?.getAttribute('role'))) === 'menuitem', 'focus in the menu');
      assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('data-status')), 'SHIPPED');
      await page.keyboard.press('ArrowDown');
      assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('data-status')), 'CANCELLED');
      await page.keyboard.press('Enter');
      const dialog = page.getByRole('alertdialog');
      await dialog.waitFor();
      assert.match(await dialog.innerText(), /refund/i);
      await page.keyboard.press('Escape');
      await dialog.waitFor({ state: 'detached' });
      assert.equal((await graphqlFetch(E2E_ORDER_PAYMENT, { id }, adminToken)).order.status, 'PAID', 'Escape keeps the order');

      await menu.click();
      await page.getByRole('menuitem', { name: /Cancel order/ }).click();
      await page.getByRole('alertdialog').getByRole('button', { name: 'Cancel order' }).click();
      await eventually(async () => (await graphqlFetch(E2E_ORDER_PAYMENT, { id }, adminToken)).order.status === 'CANCELLED', 'cancelled');
      const refund = page.getByRole('button', { name: 'Refund' });
      await refund.waitFor({ timeout: 15_000 });
      await page.screenshot({ path: join(DOCS, 'order-refund-needed.png') });
      await refund.click();
      await eventually(async () => (await graphqlFetch(E2E_ORDER_PAYMENT, { id }, adminToken)).order.payment.status === 'REFUNDED', 'REFUNDED');
      await refund.waitFor({ state: 'detached' });
      assert.match(await page.getByTestId('order-payment').innerText(), /Refunded/);
      assert.equal((await graphqlFetch(E2E_ORDER_PAYMENT, { id }, adminToken)).order.payment.needsRefund, false);
      // The page's history (Order.history, then live events): the whole story, newest first,
      // each event once.
      const kinds = async () =>
        page.getByTestId('order-history').locator('[data-testid="timeline-event"]').evaluateAll((els) => els.map((e) => e.getAttribute('data-kind')));
      await eventually(async () => (await kinds())[0] === 'REFUNDED', 'REFUNDED in the history');
      assert.deepEqual(await kinds(), ['REFUNDED', 'REFUND_NEEDED', 'STATUS_CHANGED', 'PAYMENT_SUCCEEDED', 'PAYMENT_INITIATED', 'CREATED']);
      await page.screenshot({ path: join(DOCS, 'order-history.png') });
    } finally {
      await ctx.close();
    }
  });

  test('payments needing attention: refund from the list, retry a dead letter', async () => {
    const { id, paymentId } = await orderNeedingRefund();
    const { ctx, page } = await signedIn({ viewport: DESKTOP, path: 'payments' });
    try {
      const row = page.getByTestId(`refund-row-${id}`);
      await row.waitFor({ timeout: 15_000 });
      await row.getByRole('button', { name: /^Refund/ }).click();
      await row.waitFor({ state: 'detached', timeout: 15_000 });
      const after = await graphqlFetch(E2E_ORDER_PAYMENT, { id }, adminToken);
      assert.equal(after.order.payment.id, paymentId);
      assert.equal(after.order.payment.status, 'REFUNDED');

      const letter = page.locator('[data-testid^="dead-letter-"]').first();
      await letter.waitFor();
      const error = await letter.locator('td').nth(2).innerText();
      assert.match(error, /HTTP 503|timeout/);
      const notRetried = page.locator('[data-testid^="dead-letter-"]', { hasNotText: 'retried' }).first();
      const letterId = (await notRetried.getAttribute('data-testid'))?.replace('dead-letter-', '');
      await notRetried.getByRole('button', { name: /^Retry/ }).click();
      await page.locator('[data-testid="toast"]', { hasText: 'retried' }).waitFor();
      await eventually(async () => (await page.getByTestId(`dead-letter-${letterId}`).innerText()).includes('retried'), 'retriedAt shown');
    } finally {
      await ctx.close();
    }
  });

  test('products: create, then edit name and price', async () => {
    const sku = `E2E-${randomToken().slice(-8).toUpperCase()}`;
    const { ctx, page } = await signedIn({ viewport: DESKTOP, path: 'products' });
    try {
      const form = page.getByTestId('new-product');
      await form.getByLabel('SKU').fill(sku);
      await form.getByLabel('Name').fill('Sprocket');
      await form.getByLabel('Price (USD)').fill('12.5');
      await form.getByRole('button', { name: 'Create' }).click();
      await page.getByTestId(`product-${sku}`).waitFor();
      let stored = (await graphqlFetch(E2E_PRODUCTS, {}, adminToken)).products.find((/** @type {any} */ p) => p.sku === sku);
      assert.deepEqual(stored, { sku, name: 'Sprocket', priceCents: 1250 });
      assert.equal(await form.getByLabel('SKU').inputValue(), '', 'the form is cleared');

      await page.getByRole('button', { name: `Edit ${sku}` }).click();
      const edit = page.getByTestId(`edit-product-${sku}`);
      await edit.getByLabel('Name').fill('Sprocket XL');
      await edit.getByLabel('Price (USD)').fill('abc');
      await edit.getByRole('button', { name: 'Save' }).click();
      await edit.getByRole('alert').waitFor();
      await edit.getByLabel('Price (USD)').fill('19.99');
      await edit.getByRole('button', { name: 'Save' }).click();
      await eventually(async () => (await page.getByTestId(`product-${sku}`).innerText()).includes('$19.99'), 'the new price');
      stored = (await graphqlFetch(E2E_PRODUCTS, {}, adminToken)).products.find((/** @type {any} */ p) => p.sku === sku);
      assert.deepEqual(stored, { sku, name: 'Sprocket XL', priceCents: 1999 });
    } finally {
      await ctx.close();
    }
  });

  test('dark mode follows the OS, the toggle overrides it and is kept', async () => {
    const { ctx, page } = await signedIn({ viewport: DESKTOP, dark: true });
    try {
      const isDark = () => page.evaluate(() => document.documentElement.classList.contains('dark'));
      await page.getByTestId('orders-chart').waitFor();
      assert.equal(await isDark(), true, 'dark from prefers-color-scheme');
      const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      assert.notEqual(bg, 'rgb(255, 255, 255)');
      await page.getByTestId('theme-toggle').click();
      assert.equal(await isDark(), false);
      await page.reload();
      await page.getByTestId('orders-chart').waitFor();
      assert.equal(await isDark(), false, 'the choice survives a reload');
      await page.getByTestId('theme-toggle').click();
      assert.equal(await isDark(), true);
    } finally {
      await ctx.close();
    }
  });

  test('toasts leave room: the last row and the pagination can be scrolled clear of them', async () => {
    const { ctx, page } = await signedIn({ viewport: DESKTOP, path: 'orders' });
    try {
      await waitForRows(page);
      // A long page (100 rows), then a toast: the status change of the newest order.
      const id = await newOrder();
      await page.goto(`${ADMIN_URL}orders?limit=100`);
      await rowsWhere(page, (l) => l[0]?.id === id && l.length > 20, 'the new order on a long page');
      await page.getByTestId(`status-menu-${id}`).click();
      await page.getByRole('menuitem', { name: /Mark as paid|Cancel order/ }).first().click();
      await page.getByTestId('toasts').locator('[data-testid="toast"]').first().waitFor();
      await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight));
      const last = page.locator('[data-testid^="order-row-"]').last();
      const lastBox = await last.boundingBox();
      const toastTop = (await page.getByTestId('toasts').locator('[data-testid="toast"]').first().boundingBox())?.y ?? 0;
      assert.ok(lastBox && lastBox.y + lastBox.height <= toastTop + 1, `the last row (bottom ${lastBox && lastBox.y + lastBox.height}) is above the toasts (top ${toastTop})`);
    } finally {
      await ctx.close();
    }
  });

  for (const dark of [false, true]) {
    for (const viewport of [DESKTOP, PHONE]) {
      const label = `${dark ? 'dark' : 'light'}, ${viewport.width}px`;
      test(`every page passes axe-core (${label}), without sideways scrolling`, async () => {
        const orderId = (await rowsOf()).at(0);
        const { ctx, page } = await signedIn({ viewport, dark });
        try {
          for (const p of PAGES) {
            await page.goto(`${ADMIN_URL}${p.path.replace('ORDER', orderId ?? '1')}`);
            await page.locator(p.ready).first().waitFor({ timeout: 15_000 });
            await page.locator('[data-testid="skeleton-row"]').first().waitFor({ state: 'detached' });
            await assertAccessible(page, `${p.name} (${label})`);
            if (viewport === PHONE && p.name === 'orders' && !dark) {
              // The headers are hidden on a phone: the sort is a select there.
              await page.getByLabel('Sort').selectOption({ label: 'Highest amount first' });
              await eventually(async () => new URL(page.url()).searchParams.get('sort') === 'AMOUNT_HIGH', 'sort from the phone select');
              await rowsWhere(page, (l) => l.length > 0, 'rows');
            }
            if (viewport === PHONE) {
              const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
              assert.ok(overflow <= 0, `${p.name}: no sideways scrolling at 375px (overflow ${overflow}px)`);
            }
            const suffix = `${viewport === PHONE ? '-phone' : ''}${dark ? '-dark' : ''}`;
            await page.screenshot({ path: join(DOCS, `${p.name}${suffix}.png`), fullPage: viewport !== PHONE });
          }
        } finally {
          await ctx.close();
        }
      });
    }
  }

  test('no page broke the Content-Security-Policy or threw', () => {
    assert.deepEqual(csp, []);
    assert.deepEqual(pageErrors, []);
  });
});

async function rowsOf() {
  const data = await graphqlFetch(E2E_ORDERS_SORTED, { sort: 'NEWEST' }, adminToken);
  return /** @type {string[]} */ (data.orders.items.map((/** @type {any} */ o) => o.id));
}
