import type { LiveState } from '../lib/apollo';

const LOOK: Record<LiveState, { label: string; dot: string; text: string; title: string }> = {
  live: {
    label: 'Live',
    dot: 'bg-emerald-500',
    text: 'text-emerald-700 bg-emerald-50 ring-emerald-600/20',
    title: 'Receiving order status changes as they happen',
  },
  connecting: {
    label: 'Connecting…',
    dot: 'bg-amber-500',
    text: 'text-amber-800 bg-amber-50 ring-amber-600/20',
    title: 'Opening the live connection',
  },
  reconnecting: {
    label: 'Reconnecting…',
    dot: 'bg-amber-500',
    text: 'text-amber-800 bg-amber-50 ring-amber-600/20',
    title: 'The live connection dropped; retrying',
  },
};

export function LiveIndicator({ state }: { state: LiveState }) {
  const look = LOOK[state];
  return (
    <span
      data-testid="live-indicator"
      data-state={state}
      title={look.title}
      role="status"
      className={`inline-flex items-center gap-1.5 rounded-full px-2.5 py-1 text-xs font-medium ring-1 ring-inset ${look.text}`}
    >
      <span className="relative flex size-2" aria-hidden="true">
        {state === 'live' && <span className="absolute inline-flex size-full animate-ping rounded-full bg-emerald-400 opacity-60" />}
        <span className={`relative inline-flex size-2 rounded-full ${look.dot}`} />
      </span>
      {look.label}
    </span>
  );
}
