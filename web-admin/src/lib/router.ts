import { useSyncExternalStore, type MouseEvent } from 'react';

/** The admin's pages live under /admin (vite `base`); the server answers index.html for any /admin/* path. */
export const BASE = '/admin';

const listeners = new Set<() => void>();
/** Counts navigations (links, Back, Forward): a page keyed by it starts afresh from the URL. */
let navigations = 0;
const notify = () => {
  navigations += 1;
  listeners.forEach((l) => l());
};
window.addEventListener('popstate', notify);

function subscribe(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

const currentPath = () => window.location.pathname;

/** The path under /admin ('/', '/orders', '/orders/42', ...), re-rendering on navigation and on Back. */
export function usePath(): string {
  const full = useSyncExternalStore(subscribe, currentPath, currentPath);
  const rest = full.startsWith(BASE) ? full.slice(BASE.length) : full;
  const trimmed = rest.replace(/\/+$/, '');
  return trimmed === '' ? '/' : trimmed;
}

const currentNavigation = () => navigations;
export function useNavigation(): number {
  return useSyncExternalStore(subscribe, currentNavigation, currentNavigation);
}

export function href(path: string): string {
  return path === '/' ? `${BASE}/` : `${BASE}${path}`;
}

/** A new history entry (so Back returns here), then the page re-renders. */
export function navigate(path: string, { replace = false } = {}): void {
  const url = href(path);
  if (url === `${window.location.pathname}${window.location.search}`) return;
  if (replace) window.history.replaceState(null, '', url);
  else window.history.pushState(null, '', url);
  window.scrollTo(0, 0);
  notify();
}

/** onClick for an <a href>: a plain left click navigates in place; modified clicks open a tab as usual. */
export function linkClick(path: string) {
  return (e: MouseEvent<HTMLAnchorElement>) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(path);
  };
}
