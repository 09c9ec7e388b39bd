// GraphiQL for this service, built from npm packages and served by the service itself at
// GET /graphql (assets under /graphiql/): no request leaves the machine.
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { GraphiQL, HISTORY_PLUGIN } from 'graphiql';
import { explorerPlugin } from '@graphiql/plugin-explorer';
import type { Fetcher, FetcherOpts, FetcherParams } from '@graphiql/toolkit';
import { getOperationAST, parse } from 'graphql';
import { createClient, type Client } from 'graphql-ws';
import 'graphiql/setup-workers/vite';
import 'graphiql/style.css';
import '@graphiql/plugin-explorer/style.css';
import './graphiql.css';
import { walkthroughTabs } from './walkthrough';

const endpoint = new URL('/graphql', window.location.href);
const wsEndpoint = new URL(endpoint);
wsEndpoint.protocol = endpoint.protocol === 'https:' ? 'wss:' : 'ws:';

/** The Authorization header of the headers pane, whatever its case. */
function authorization(headers: FetcherOpts['headers']): string | undefined {
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (name.toLowerCase() === 'authorization' && typeof value === 'string' && value.trim()) return value.trim();
  }
  return undefined;
}

/** One graphql-transport-ws client per token: the server reads the token in connection_init. */
const wsClients = new Map<string, Client>();
function wsClient(auth: string | undefined): Client {
  const key = auth ?? '';
  let client = wsClients.get(key);
  if (!client) {
    client = createClient({
      url: wsEndpoint.href,
      connectionParams: auth ? { authorization: auth } : {},
      lazy: true,
      retryAttempts: 0,
    });
    wsClients.set(key, client);
  }
  return client;
}

function isSubscription(params: FetcherParams): boolean {
  try {
    const op = getOperationAST(parse(params.query), params.operationName ?? undefined);
    return op?.operation === 'subscription';
  } catch {
    return false; // the server reports the syntax error
  }
}

const fetcher: Fetcher = async (params, opts) => {
  const auth = authorization(opts?.headers);
  if (isSubscription(params)) {
    return wsClient(auth).iterate({
      query: params.query,
      variables: params.variables ?? undefined,
      operationName: params.operationName ?? undefined,
    });
  }
  const response = await fetch(endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', ...(opts?.headers ?? {}) },
    body: JSON.stringify(params),
  });
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return { errors: [{ message: `HTTP ${response.status}: ${text.slice(0, 500)}` }] };
  }
};

// Passing plugins replaces GraphiQL's default list (history): keep it, add the explorer.
const plugins = [HISTORY_PLUGIN, explorerPlugin()];

function Help() {
  return (
    <header className="giql-help" data-testid="graphiql-help">
      <strong>Order service · GraphiQL</strong>
      <span>
        Run <code>Login</code>, then put <code>{'{"Authorization": "Bearer <accessToken>"}'}</code> in the{' '}
        <em>Headers</em> pane below the editor. Queries and mutations send it as a header; subscriptions (over{' '}
        <code>graphql-transport-ws</code> at <code>{endpoint.pathname}</code>) send it in <code>connection_init</code>.
        The first tab holds the README's walk-through; the second watches order changes.
      </span>
    </header>
  );
}

createRoot(document.getElementById('graphiql')!).render(
  <StrictMode>
    <div className="giql-page">
      <Help />
      <div className="giql-main">
        <GraphiQL
          fetcher={fetcher}
          plugins={plugins}
          defaultTabs={walkthroughTabs}
          defaultHeaders={'{\n  \n}'}
          defaultEditorToolsVisibility="headers"
          isHeadersEditorEnabled
          shouldPersistHeaders={false}
        />
      </div>
    </div>
  </StrictMode>,
);
