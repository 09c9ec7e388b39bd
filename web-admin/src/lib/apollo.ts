import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, split } from '@apollo/client';
import { onError } from '@apollo/client/link/error';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { getMainDefinition } from '@apollo/client/utilities';
import { createClient, type Client as WsClient } from 'graphql-ws';
import { ME } from '../graphql/operations';
import { isExpired, type Session } from './auth';
import { createStore, type Store } from './store';

export type LiveState = 'connecting' | 'live' | 'reconnecting';

/** The websocket's comings and goings, for subscriptions that resume themselves. */
export interface Connection {
  /** `reconnected`: the socket was open before in this session. */
  onConnected(listener: (reconnected: boolean) => void): () => void;
  onClosed(listener: () => void): () => void;
}

export interface SessionClient {
  client: ApolloClient<unknown>;
  live: Store<LiveState>;
  connection: Connection;
  dispose(): void;
}

const GRAPHQL_PATH = '/graphql';

function wsUrl(): string {
  const { protocol, host } = window.location;
  return `${protocol === 'https:' ? 'wss' : 'ws'}://${host}${GRAPHQL_PATH}`;
}

export function createCache(): InMemoryCache {
  return new InMemoryCache({
    typePolicies: {
      Query: {
        fields: {
          // Let the detail drawer render instantly from a row already in the cache.
          order: {
            read(existing, { args, toReference }) {
              return existing ?? (args?.id != null ? toReference({ __typename: 'Order', id: String(args.id) }) : undefined);
            },
          },
        },
      },
    },
  });
}

/** Login happens before there is a session: plain HTTP, no websocket, no cache worth keeping. */
export const publicClient = new ApolloClient({
  link: new HttpLink({ uri: GRAPHQL_PATH }),
  cache: new InMemoryCache(),
  defaultOptions: { mutate: { fetchPolicy: 'no-cache' }, query: { fetchPolicy: 'no-cache' } },
});

/**
 * One Apollo client per signed-in session: HTTP for queries and mutations, a graphql-ws
 * connection (kept open and re-opened forever) for subscriptions.
 */
export function createSessionClient(session: Session, onUnauthenticated: () => void): SessionClient {
  const live = createStore<LiveState>('connecting');
  const connectedListeners = new Set<(reconnected: boolean) => void>();
  const closedListeners = new Set<() => void>();
  let everConnected = false;
  let disposed = false;

  const authLink = new ApolloLink((operation, forward) => {
    if (isExpired(session)) onUnauthenticated();
    operation.setContext(({ headers = {} }: { headers?: Record<string, string> }) => ({
      headers: { ...headers, authorization: `Bearer ${session.token}` },
    }));
    return forward(operation);
  });

  const errorLink = onError(({ graphQLErrors, networkError }) => {
    const unauthenticated =
      graphQLErrors?.some((e) => e.extensions?.code === 'UNAUTHENTICATED') ||
      (networkError && 'statusCode' in networkError && networkError.statusCode === 401);
    if (unauthenticated) onUnauthenticated();
  });

  const wsClient: WsClient = createClient({
    url: wsUrl(),
    connectionParams: () => ({ authorization: `Bearer ${session.token}` }),
    lazy: false,
    keepAlive: 15_000,
    retryAttempts: Infinity,
    shouldRetry: () => true,
    // graphql-ws backs off exponentially without a ceiling; cap it so the link comes back soon.
    retryWait: (retries) =>
      new Promise((resolve) => setTimeout(resolve, Math.min(500 * 2 ** retries, 8_000) + Math.random() * 400)),
    onNonLazyError: () => undefined,
    on: {
      connected: () => {
        if (disposed) return;
        live.set('live');
        // The live feed resumes after the last event it saw (src/lib/live.ts): nothing sent
        // while we were away is lost, and nothing on screen needs reading again.
        const reconnected = everConnected;
        everConnected = true;
        connectedListeners.forEach((l) => l(reconnected));
      },
      closed: (event) => {
        if (disposed) return;
        live.set(everConnected ? 'reconnecting' : 'connecting');
        closedListeners.forEach((l) => l());
        const code = (event as { code?: number } | undefined)?.code;
        if (isExpired(session)) onUnauthenticated();
        else if (code === 4401 || code === 4403) {
          // Refused: ask over HTTP, whose UNAUTHENTICATED answer ends the session via errorLink.
          void client.query({ query: ME, fetchPolicy: 'network-only' }).catch(() => undefined);
        }
      },
      error: () => {
        if (!disposed) live.set(everConnected ? 'reconnecting' : 'connecting');
      },
    },
  });

  const link = split(
    ({ query }) => {
      const def = getMainDefinition(query);
      return def.kind === 'OperationDefinition' && def.operation === 'subscription';
    },
    new GraphQLWsLink(wsClient),
    ApolloLink.from([errorLink, authLink, new HttpLink({ uri: GRAPHQL_PATH })]),
  );

  const client = new ApolloClient({ link, cache: createCache() });

  const connection: Connection = {
    onConnected(listener) {
      connectedListeners.add(listener);
      return () => connectedListeners.delete(listener);
    },
    onClosed(listener) {
      closedListeners.add(listener);
      return () => closedListeners.delete(listener);
    },
  };

  return {
    client,
    live,
    connection,
    dispose() {
      disposed = true;
      void wsClient.dispose();
      client.stop();
      void client.clearStore().catch(() => undefined);
    },
  };
}
