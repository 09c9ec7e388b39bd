import { OrderPage } from '../pages/OrderPage';
import { DashboardPage } from '../pages/DashboardPage';
import { PaymentsPage } from '../pages/PaymentsPage';
import { ProductsPage } from '../pages/ProductsPage';
import { useNavigation, usePath } from '../lib/router';
import { useStore } from '../lib/store';
import { setTheme, darkMode } from '../lib/theme';
import { OrdersPage } from './OrdersPage';
import { Link } from './ui';

// The back office's pages under /admin (issue 17) and the header's nav and theme toggle.

const PAGES: { to: string; label: string; match: (path: string) => boolean }[] = [
  { to: '/', label: 'Dashboard', match: (p) => p === '/' },
  { to: '/orders', label: 'Orders', match: (p) => p === '/orders' || p.startsWith('/orders/') },
  { to: '/payments', label: 'Payments', match: (p) => p === '/payments' },
  { to: '/products', label: 'Products', match: (p) => p === '/products' },
];

export function AdminNav() {
  const path = usePath();
  return (
    <nav aria-label="Main" className="-mb-px overflow-x-auto">
      <ul className="flex gap-1">
        {PAGES.map((p) => {
          const current = p.match(path);
          return (
            <li key={p.to}>
              <Link
                to={p.to}
                aria-current={current ? 'page' : undefined}
                className={`inline-block whitespace-nowrap border-b-2 px-3 py-2 text-sm font-medium focus-visible:outline-2 focus-visible:outline-indigo-600 ${
                  current ? 'border-indigo-600 text-slate-900' : 'border-transparent text-slate-600 hover:border-slate-300 hover:text-slate-900'
                }`}
              >
                {p.label}
              </Link>
            </li>
          );
        })}
      </ul>
    </nav>
  );
}

/** Light or dark: starts from the OS preference; a click picks the other one and keeps it. */
export function ThemeToggle() {
  const dark = useStore(darkMode);
  return (
    <button
      type="button"
      onClick={() => setTheme(dark ? 'light' : 'dark')}
      aria-pressed={dark}
      aria-label="Dark mode"
      title={dark ? 'Switch to light mode' : 'Switch to dark mode'}
      data-testid="theme-toggle"
      className="rounded-md p-1.5 text-slate-600 ring-1 ring-inset ring-slate-300 hover:bg-slate-50 focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-indigo-600"
    >
      <svg aria-hidden="true" viewBox="0 0 24 24" className="size-5" fill="none" stroke="currentColor" strokeWidth={2} strokeLinecap="round" strokeLinejoin="round">
        {dark ? (
          <path d="M21 12.8A9 9 0 1 1 11.2 3a7 7 0 0 0 9.8 9.8Z" />
        ) : (
          <>
            <circle cx="12" cy="12" r="4" />
            <path d="M12 2v2M12 20v2M4.9 4.9l1.4 1.4M17.7 17.7l1.4 1.4M2 12h2M20 12h2M4.9 19.1l1.4-1.4M17.7 6.3l1.4-1.4" />
          </>
        )}
      </svg>
    </button>
  );
}

function NotFound() {
  return (
    <main id="main" className="mx-auto max-w-7xl px-4 py-10 sm:px-6">
      <h1 className="text-2xl font-semibold text-slate-900">Page not found</h1>
      <p className="mt-2 text-sm text-slate-600">
        <Link to="/">Go to the dashboard</Link>
      </p>
    </main>
  );
}

export function AdminRoutes() {
  const path = usePath();
  const navigation = useNavigation();
  if (path === '/') return <DashboardPage />;
  // Keyed by the navigation: a link to /orders?status=PAID from /orders reads the new query.
  if (path === '/orders') return <OrdersPage key={navigation} />;
  const order = /^\/orders\/([^/]+)$/.exec(path);
  if (order) return <OrderPage key={order[1]} orderId={decodeURIComponent(order[1]!)} />;
  if (path === '/payments') return <PaymentsPage />;
  if (path === '/products') return <ProductsPage />;
  return <NotFound />;
}
