import { ApolloError, type ApolloClient } from '@apollo/client';
import { ORDER_EVENTS, ORDER_LIVE_FIELDS } from '../graphql/operations';
import type { OrderEvent } from '../graphql/types';
import type { Connection } from './apollo';
import { createStore, type Store } from './store';

export interface LiveFeed {
  /** Events seen in this session, per order id, oldest first (each once). */
  events: Store<ReadonlyMap<string, readonly OrderEvent[]>>;
  /** Orders whose row should flash, with a counter that changes on every new event. */
  flashes: Store<ReadonlyMap<string, number>>;
  /** New orders seen in this session (CREATED events), newest last. */
  created: Store<readonly OrderEvent[]>;
  stop(): void;
}

const FLASH_MS = 2_000;
// Cursors remembered to drop an event seen twice; far more than a reconnect replays.
const SEEN_LIMIT = 5_000;

interface LiveFields {
  id: string;
  status: string;
  version: number;
  updatedAt: string;
}

function errorCode(error: unknown): string | undefined {
  if (error instanceof ApolloError) {
    const coded = error.graphQLErrors.find((e) => e.extensions?.code);
    return coded?.extensions?.code as string | undefined;
  }
  const list = Array.isArray(error) ? error : [error];
  for (const e of list) {
    const code = (e as { extensions?: { code?: unknown } } | null)?.extensions?.code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/**
 * Subscribes to every order's events for the whole session (`orderEvents`) and folds each
 * into the Apollo cache, so any row or drawer showing that order re-renders.
 *
 * When the websocket drops, the subscription is ended with it; when it comes back, it is
 * started again with `after` = the cursor of the last event received, so the server sends
 * what happened meanwhile, then goes on live: nothing missed, nothing twice. A cursor older
 * than the server's replay window (CURSOR_EXPIRED) re-reads what is on screen and starts
 * again from now.
 */
export function startLiveFeed(client: ApolloClient<unknown>, connection: Connection): LiveFeed {
  const events = createStore<ReadonlyMap<string, readonly OrderEvent[]>>(new Map());
  const flashes = createStore<ReadonlyMap<string, number>>(new Map());
  const created = createStore<readonly OrderEvent[]>([]);
  const timers = new Map<string, ReturnType<typeof setTimeout>>();
  const seen = new Set<string>();
  let cursor: string | null = null;
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

  const apply = (event: OrderEvent) => {
    cursor = event.cursor;
    if (seen.has(event.cursor)) return;
    seen.add(event.cursor);
    if (seen.size > SEEN_LIMIT) seen.delete(seen.values().next().value as string);
    const orderId = String(event.orderId);
    events.set((prev) => new Map(prev).set(orderId, [...(prev.get(orderId) ?? []), event]));
    if (event.kind === 'CREATED') {
      created.set((prev) => [...prev, event]);
      return;
    }

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
        updatedAt: () => event.at,
      },
    });
    flash(orderId);
  };

  let stopped = false;
  let failures = 0;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let subscription: { unsubscribe(): void } | undefined;

  const end = () => {
    subscription?.unsubscribe();
    subscription = undefined;
  };
  // graphql-ws retries dropped connections itself, but gives up on some close codes
  // (4400, 4500, 1011, ...); then the subscription errors, and we start it again.
  const restart = () => {
    end();
    if (stopped) return;
    failures += 1;
    clearTimeout(retryTimer);
    retryTimer = setTimeout(start, Math.min(1_000 * 2 ** failures, 15_000));
  };
  const start = () => {
    end();
    if (stopped) return;
    const mine = client
      .subscribe({ query: ORDER_EVENTS, variables: { orderId: null, after: cursor }, fetchPolicy: 'no-cache' })
      .subscribe({
        next: (result) => {
          failures = 0;
          if (result.errors?.length) {
            onError(result.errors);
            return;
          }
          const event = result.data?.orderEvents;
          if (event) apply(event);
        },
        error: (error: unknown) => onError(error),
        complete: () => {
          if (subscription === mine) restart();
        },
      });
    subscription = mine;
  };
  const onError = (error: unknown) => {
    if (errorCode(error) === 'CURSOR_EXPIRED') {
      // Too far behind to replay: read the screen again and go on from now.
      cursor = null;
      void client.refetchQueries({ include: 'active' }).catch(() => undefined);
      start();
      return;
    }
    restart();
  };

  const offClosed = connection.onClosed(() => {
    // Ended with the socket, so that graphql-ws does not start it again with the old cursor.
    end();
  });
  const offConnected = connection.onConnected((reconnected) => {
    if (!reconnected && subscription) return; // the first connection carries the first start()
    // Without a cursor (no event seen yet) there is nothing to resume from: re-read.
    if (reconnected && cursor === null) void client.refetchQueries({ include: 'active' }).catch(() => undefined);
    start();
  });
  start();

  return {
    events,
    flashes,
    created,
    stop() {
      stopped = true;
      offClosed();
      offConnected();
      clearTimeout(retryTimer);
      end();
      timers.forEach((t) => clearTimeout(t));
      timers.clear();
    },
  };
}
