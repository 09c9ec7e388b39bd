import { ApolloProvider } from '@apollo/client';
import { useEffect, useRef, useState } from 'react';
import { ME } from '../graphql/operations';
import { createSessionClient, type SessionClient } from '../lib/apollo';
import { NOT_ADMIN_MESSAGE, SESSION_EXPIRED_MESSAGE, type Session } from '../lib/auth';
import { LiveFeedContext } from '../lib/context';
import { startLiveFeed, type LiveFeed } from '../lib/live';
import { useStore } from '../lib/store';
import { LiveIndicator } from './LiveIndicator';
import { AdminNav, AdminRoutes, ThemeToggle } from './AdminNav';

const MAX_TIMEOUT = 2 ** 31 - 1;

interface Props {
  session: Session;
  onSignOut: (message: string | null) => void;
}

export function AdminSession({ session, onSignOut }: Props) {
  const [ready, setReady] = useState<{ sc: SessionClient; feed: LiveFeed } | null>(null);
  const signOutRef = useRef(onSignOut);
  signOutRef.current = onSignOut;

  useEffect(() => {
    let ended = false;
    const end = (message: string | null) => {
      if (ended) return;
      ended = true;
      signOutRef.current(message);
    };
    const sc = createSessionClient(session, () => end(SESSION_EXPIRED_MESSAGE));
    const feed = startLiveFeed(sc.client, sc.connection);
    setReady({ sc, feed });

    let expiryTimer: ReturnType<typeof setTimeout> | undefined;
    if (session.exp !== null) {
      expiryTimer = setTimeout(() => end(SESSION_EXPIRED_MESSAGE), Math.min(Math.max(session.exp * 1000 - Date.now(), 0), MAX_TIMEOUT));
    }

    // The role in the token may be stale: the database's word counts.
    sc.client
      .query({ query: ME, fetchPolicy: 'network-only' })
      .then(({ data }) => {
        if (data?.me && data.me.role !== 'ADMIN') end(NOT_ADMIN_MESSAGE);
      })
      .catch(() => undefined);

    return () => {
      ended = true;
      clearTimeout(expiryTimer);
      feed.stop();
      sc.dispose();
    };
  }, [session]);

  if (!ready) return null;
  return (
    <ApolloProvider client={ready.sc.client}>
      <LiveFeedContext.Provider value={ready.feed}>
        <Shell sc={ready.sc} email={session.email} onSignOut={() => onSignOut(null)} />
      </LiveFeedContext.Provider>
    </ApolloProvider>
  );
}

function Shell({ sc, email, onSignOut }: { sc: SessionClient; email: string; onSignOut: () => void }) {
  const live = useStore(sc.live);
  return (
    <div className="min-h-dvh">
      <a
        href="#content"
        className="sr-only focus:not-sr-only focus:absolute focus:left-2 focus:top-2 focus:z-50 focus:rounded focus:bg-white focus:px-3 focus:py-2 focus:text-sm focus:shadow"
      >
        Skip to content
      </a>
      <header className="sticky top-0 z-30 border-b border-slate-200 bg-white/90 backdrop-blur">
        <div className="mx-auto flex max-w-7xl items-center gap-x-3 px-4 py-3 sm:gap-x-4 sm:px-6">
          <div className="flex min-w-0 items-center gap-2.5">
            <span aria-hidden="true" className="flex size-8 items-center justify-center rounded-lg bg-indigo-600 text-white">
              <svg viewBox="0 0 24 24" className="size-5" fill="none" stroke="currentColor" strokeWidth={2.2} strokeLinecap="round">
                <path d="M6 8h12M6 12h12M6 16h7" />
              </svg>
            </span>
            <span className="truncate text-sm font-semibold tracking-tight text-slate-900">
              Order service <span className="hidden font-normal text-slate-500 sm:inline">/ Admin</span>
            </span>
          </div>
          <div className="ml-auto flex shrink-0 items-center gap-2 sm:gap-3">
            <ThemeToggle />
            <LiveIndicator state={live} />
            <span className="hidden max-w-48 truncate text-sm text-slate-600 sm:inline" title={email} data-testid="current-user">
              {email}
            </span>
            <button
              type="button"
              onClick={onSignOut}
              className="rounded-md px-2.5 py-1.5 text-sm font-medium text-slate-700 ring-1 ring-inset ring-slate-300 hover:bg-slate-50 focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-indigo-600"
            >
              Sign out
            </button>
          </div>
        </div>
        <div className="mx-auto max-w-7xl px-2 sm:px-4">
          <AdminNav />
        </div>
      </header>
      <div id="content" tabIndex={-1} className="outline-none">
        <AdminRoutes />
      </div>
    </div>
  );
}
