import { useCallback, useState } from 'react';
import { AdminSession } from './components/AdminSession';
import { LoginPage } from './components/LoginPage';
import { Toasts } from './components/Toasts';
import { clearSession, isExpired, loadSession, saveSession, SESSION_EXPIRED_MESSAGE, setFlash, type Session } from './lib/auth';

function initialSession(): Session | null {
  const stored = loadSession();
  if (stored && (isExpired(stored) || stored.role === 'USER')) {
    clearSession();
    if (isExpired(stored)) setFlash(SESSION_EXPIRED_MESSAGE);
    return null;
  }
  return stored;
}

export function App() {
  const [session, setSession] = useState<Session | null>(initialSession);

  const signIn = useCallback((next: Session) => {
    saveSession(next);
    setFlash(null);
    setSession(next);
  }, []);

  const signOut = useCallback((message: string | null) => {
    clearSession();
    setFlash(message);
    setSession(null);
  }, []);

  return (
    <>
      {session ? (
        // A new key per token: a fresh Apollo client, cache and websocket for every session.
        <AdminSession key={session.token} session={session} onSignOut={signOut} />
      ) : (
        <LoginPage onSignedIn={signIn} />
      )}
      <Toasts />
    </>
  );
}
