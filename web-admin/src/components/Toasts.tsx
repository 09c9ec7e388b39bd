import { useEffect, useRef } from 'react';
import { dismissToast, toasts, type ToastKind } from '../lib/toast';
import { useStore } from '../lib/store';

const STYLE: Record<ToastKind, string> = {
  success: 'border-emerald-200 bg-white text-slate-800 [--accent:var(--color-emerald-500)]',
  error: 'border-rose-200 bg-white text-slate-800 [--accent:var(--color-rose-500)]',
  info: 'border-slate-200 bg-white text-slate-800 [--accent:var(--color-indigo-500)]',
};

const ICON: Record<ToastKind, string> = { success: '✓', error: '!', info: 'i' };

export function Toasts() {
  const list = useStore(toasts);
  const ref = useRef<HTMLDivElement>(null);

  // The page gets room below its end for the toasts, so they never hide the last row's
  // buttons or the pagination: scrolled to the bottom, everything sits above them (issue 17).
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const fit = () => {
      const h = list.length ? el.offsetHeight : 0;
      document.body.style.paddingBottom = h ? `${h}px` : '';
    };
    fit();
    const ro = new ResizeObserver(fit);
    ro.observe(el);
    return () => ro.disconnect();
  }, [list.length]);

  return (
    <div
      ref={ref}
      data-testid="toasts"
      aria-live="polite"
      role="status"
      className="pointer-events-none fixed inset-x-0 bottom-0 z-50 flex flex-col items-center gap-2 p-4 sm:items-end"
    >
      {list.map((t) => (
        <div
          key={t.id}
          data-testid="toast"
          data-kind={t.kind}
          className={`pointer-events-auto flex w-full max-w-sm items-start gap-3 rounded-lg border px-4 py-3 text-sm shadow-lg shadow-slate-900/5 animate-toast-in ${STYLE[t.kind]}`}
        >
          <span
            aria-hidden="true"
            className="mt-0.5 flex size-5 shrink-0 items-center justify-center rounded-full bg-[var(--accent)] text-xs font-bold text-white"
          >
            {ICON[t.kind]}
          </span>
          <p className="flex-1 leading-snug">{t.message}</p>
          <button
            type="button"
            onClick={() => dismissToast(t.id)}
            aria-label="Dismiss notification"
            className="-m-1 rounded p-1 text-slate-400 hover:text-slate-700 focus-visible:outline-2 focus-visible:outline-indigo-500"
          >
            ✕
          </button>
        </div>
      ))}
    </div>
  );
}
