import type { ApolloClient } from '@apollo/client';
import { ORDER_LIVE_FIELDS, ORDER_STATUS_CHANGED } from '../graphql/operations';
import type { OrderStatusEvent } from '../graphql/types';
import { createStore, type Store } from './store';

export interface LiveFeed {
  /** Status events seen in this session, per order id, oldest first. */
  events: Store<ReadonlyMap<string, readonly OrderStatusEvent[]>>;
  /** Orders whose row should flash, with a counter that changes on every new event. */
  flashes: Store<ReadonlyMap<string, number>>;
  stop(): void;
}

const FLASH_MS = 2_000;

interface LiveFields {
  id: string;
  status: string;
  version: number;
  updatedAt: string;
}

/**
 * Subscribes to every order's status changes for the whole session and folds each
 * event into the Apollo cache, so any row or drawer showing that order re-renders.
 */
export function startLiveFeed(client: ApolloClient<unknown>): LiveFeed {
  const events = createStore<ReadonlyMap<string, readonly OrderStatusEvent[]>>(new Map());
  const flashes = createStore<ReadonlyMap<string, number>>(new Map());
  const timers = new Map<string, ReturnType<typeof setTimeout>>();
  let counter = 0;

  const flash = (orderId: string) => {
    counter += 1;
    const n = counter;
    flashes.set((prev) => new Map(prev).set(orderId, n));
    clearTimeout(timers.get(orderId));
    timers.set(
      orderId,
      setTimeout(() => {
        timers.delete(orderId);
        flashes.set((prev) => {
          const next = new Map(prev);
          next.delete(orderId);
          return next;
        });
      }, FLASH_MS),
    );
  };

  const apply = (event: OrderStatusEvent) => {
    const orderId = String(event.orderId);
    events.set((prev) => {
      const list = prev.get(orderId) ?? [];
      if (list.some((e) => e.version === event.version && e.status === event.status)) return prev;
      return new Map(prev).set(orderId, [...list, event]);
    });

    const id = client.cache.identify({ __typename: 'Order', id: orderId });
    if (!id) return;
    const current = client.cache.readFragment<LiveFields>({ id, fragment: ORDER_LIVE_FIELDS });
    if (!current) return; // not on screen, nothing to update
    if (current.version >= event.version) {
      return; // our own mutation already wrote it (or a newer state is known)
    }
    client.cache.modify({
      id,
      fields: {
        status: () => event.status,
        version: () => event.version,
        updatedAt: () => event.changedAt,
      },
    });
    flash(orderId);
  };

  // graphql-ws retries dropped connections itself, but gives up on some close codes
  // (4400, 4500, 1011, ...); then the subscription errors, and we start it again.
  let stopped = false;
  let failures = 0;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let subscription: { unsubscribe(): void } | undefined;
  const restart = () => {
    if (stopped) return;
    failures += 1;
    retryTimer = setTimeout(start, Math.min(1_000 * 2 ** failures, 15_000));
  };
  const start = () => {
    subscription = client.subscribe({ query: ORDER_STATUS_CHANGED, variables: { orderId: null } }).subscribe({
      next: (result) => {
        failures = 0;
        const event = result.data?.orderStatusChanged;
        if (event) apply(event);
      },
      error: restart,
      complete: restart,
    });
  };
  start();

  return {
    events,
    flashes,
    stop() {
      stopped = true;
      clearTimeout(retryTimer);
      subscription?.unsubscribe();
      timers.forEach((t) => clearTimeout(t));
      timers.clear();
    },
  };
}
