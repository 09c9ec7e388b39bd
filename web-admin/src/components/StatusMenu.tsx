import { useEffect, useId, useLayoutEffect, useRef, useState, type KeyboardEvent } from 'react';
import type { OrderStatus } from '../graphql/types';
import { NEXT_STATUSES, STATUS_DOT, STATUS_LABEL } from '../lib/status';

const ACTION_LABEL: Record<OrderStatus, string> = {
  PENDING: 'Mark as pending',
  PAID: 'Mark as paid',
  SHIPPED: 'Mark as shipped',
  DELIVERED: 'Mark as delivered',
  CANCELLED: 'Cancel order',
};

interface Props {
  orderId: string;
  status: OrderStatus;
  busy: boolean;
  onSelect: (next: OrderStatus) => void;
}

/** "Change status" menu button offering only the moves the state machine allows. */
export function StatusMenu({ orderId, status, busy, onSelect }: Props) {
  const options = NEXT_STATUSES[status];
  const [open, setOpen] = useState(false);
  const [pos, setPos] = useState<{ top: number; right: number; up: boolean } | null>(null);
  const buttonRef = useRef<HTMLButtonElement>(null);
  const menuRef = useRef<HTMLDivElement>(null);
  const menuId = useId();

  const close = (restoreFocus: boolean) => {
    setOpen(false);
    setPos(null);
    if (restoreFocus) buttonRef.current?.focus();
  };

  useLayoutEffect(() => {
    if (!open || !buttonRef.current) return;
    const r = buttonRef.current.getBoundingClientRect();
    const up = window.innerHeight - r.bottom < 48 * options.length + 24;
    setPos({ top: up ? r.top - 6 : r.bottom + 6, right: Math.max(window.innerWidth - r.right, 8), up });
  }, [open, options.length]);

  // The menu renders once its position is known: focus its first item then (Enter, Space,
  // ArrowDown or a click), so the arrow keys work at once (issue 17).
  const placed = pos !== null;
  useEffect(() => {
    if (open && placed) menuRef.current?.querySelector<HTMLElement>('[role="menuitem"]')?.focus();
  }, [open, placed]);

  useEffect(() => {
    if (!open) return;
    const onPointer = (e: PointerEvent) => {
      if (!menuRef.current?.contains(e.target as Node) && !buttonRef.current?.contains(e.target as Node)) close(false);
    };
    const onScroll = () => close(false);
    document.addEventListener('pointerdown', onPointer);
    window.addEventListener('resize', onScroll);
    window.addEventListener('scroll', onScroll, true);
    return () => {
      document.removeEventListener('pointerdown', onPointer);
      window.removeEventListener('resize', onScroll);
      window.removeEventListener('scroll', onScroll, true);
    };
  }, [open]);

  // A live update may make the open menu's choices stale.
  useEffect(() => {
    setOpen(false);
    setPos(null);
  }, [status]);

  if (options.length === 0) {
    return (
      <span className="inline-flex h-8 items-center px-1 text-xs text-slate-500" title="This order is final and cannot change">
        Final
      </span>
    );
  }

  const onMenuKey = (e: KeyboardEvent<HTMLDivElement>) => {
    const items = Array.from(menuRef.current?.querySelectorAll<HTMLElement>('[role="menuitem"]') ?? []);
    const i = items.indexOf(document.activeElement as HTMLElement);
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const next = (i + (e.key === 'ArrowDown' ? 1 : -1) + items.length) % items.length;
      items[next]?.focus();
    } else if (e.key === 'Home' || e.key === 'End') {
      e.preventDefault();
      items[e.key === 'Home' ? 0 : items.length - 1]?.focus();
    } else if (e.key === 'Escape') {
      e.preventDefault();
      e.stopPropagation();
      close(true);
    } else if (e.key === 'Tab') {
      close(false);
    }
  };

  return (
    <>
      <button
        ref={buttonRef}
        type="button"
        disabled={busy}
        aria-haspopup="menu"
        aria-expanded={open}
        aria-controls={open ? menuId : undefined}
        aria-label={`Change status of order #${orderId}`}
        data-testid={`status-menu-${orderId}`}
        onClick={() => setOpen((o) => !o)}
        onKeyDown={(e) => {
          if (e.key === 'ArrowDown' && !open) {
            e.preventDefault();
            setOpen(true);
          }
        }}
        className="inline-flex h-8 items-center gap-1 whitespace-nowrap rounded-md bg-white px-2.5 text-xs font-medium text-slate-700 shadow-xs ring-1 ring-inset ring-slate-300 hover:bg-slate-50 focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-indigo-600 disabled:cursor-wait disabled:opacity-60"
      >
        {busy ? (
          <>
            <span aria-hidden="true" className="size-3 animate-spin rounded-full border-2 border-slate-300 border-t-slate-600" />
            Saving…
          </>
        ) : (
          <>
            Status
            <svg aria-hidden="true" viewBox="0 0 20 20" className="size-4 text-slate-400" fill="currentColor">
              <path fillRule="evenodd" d="M5.23 7.21a.75.75 0 0 1 1.06.02L10 11.17l3.71-3.94a.75.75 0 1 1 1.08 1.04l-4.25 4.5a.75.75 0 0 1-1.08 0l-4.25-4.5a.75.75 0 0 1 .02-1.06Z" clipRule="evenodd" />
            </svg>
          </>
        )}
      </button>
      {open && pos && (
        <div
          ref={menuRef}
          id={menuId}
          role="menu"
          aria-label={`New status for order #${orderId}`}
          onKeyDown={onMenuKey}
          style={{ position: 'fixed', right: pos.right, top: pos.top, transform: pos.up ? 'translateY(-100%)' : undefined }}
          className="z-40 min-w-44 rounded-lg bg-white p-1 shadow-lg ring-1 ring-slate-900/10"
        >
          {options.map((next) => (
            <button
              key={next}
              type="button"
              role="menuitem"
              data-status={next}
              onClick={() => {
                close(true);
                onSelect(next);
              }}
              className={`flex w-full items-center gap-2 rounded-md px-3 py-2 text-left text-sm focus:outline-none focus-visible:bg-slate-100 hover:bg-slate-100 ${
                next === 'CANCELLED' ? 'text-rose-700' : 'text-slate-700'
              }`}
            >
              <span aria-hidden="true" className={`size-2 rounded-full ${STATUS_DOT[next]}`} />
              {ACTION_LABEL[next]}
              <span className="sr-only"> ({STATUS_LABEL[next]})</span>
            </button>
          ))}
        </div>
      )}
    </>
  );
}
