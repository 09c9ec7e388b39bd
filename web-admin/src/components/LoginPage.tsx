import { useEffect, useId, useRef, useState, type FormEvent } from 'react';
import { LOGIN } from '../graphql/operations';
import { publicClient } from '../lib/apollo';
import { NOT_ADMIN_MESSAGE, sessionFromToken, takeFlash, type Session } from '../lib/auth';
import { errorMessage, hasCode } from '../lib/errors';

export function LoginPage({ onSignedIn }: { onSignedIn: (session: Session) => void }) {
  const [flash] = useState(takeFlash);
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const emailRef = useRef<HTMLInputElement>(null);
  const errorId = useId();

  useEffect(() => emailRef.current?.focus(), []);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const { data } = await publicClient.mutate({ mutation: LOGIN, variables: { input: { email: email.trim(), password } } });
      const login = data?.login;
      if (!login) throw new Error('The server sent no login result');
      if (login.role !== 'ADMIN') {
        setError(NOT_ADMIN_MESSAGE);
        setPassword('');
        return;
      }
      onSignedIn(sessionFromToken(login.accessToken, login.user.email));
    } catch (err) {
      setError(hasCode(err, 'INVALID_CREDENTIALS') ? 'Wrong email or password' : errorMessage(err));
    } finally {
      setBusy(false);
    }
  }

  const input =
    'block w-full rounded-md border-0 bg-white px-3 py-2 text-sm text-slate-900 shadow-xs ring-1 ring-inset ring-slate-300 placeholder:text-slate-400 focus:ring-2 focus:ring-inset focus:ring-indigo-600 focus:outline-none';

  return (
    <main className="flex min-h-dvh items-center justify-center bg-gradient-to-b from-slate-50 to-slate-100 px-4 py-12">
      <div className="w-full max-w-sm">
        <div className="mb-8 flex flex-col items-center gap-3 text-center">
          <span aria-hidden="true" className="flex size-11 items-center justify-center rounded-xl bg-indigo-600 text-white shadow-sm">
            <svg viewBox="0 0 24 24" className="size-6" fill="none" stroke="currentColor" strokeWidth={2.2} strokeLinecap="round">
              <path d="M6 8h12M6 12h12M6 16h7" />
            </svg>
          </span>
          <div>
            <h1 className="text-xl font-semibold tracking-tight text-slate-900">Order service admin</h1>
            <p className="mt-1 text-sm text-slate-500">Sign in with an administrator account</p>
          </div>
        </div>

        {flash && (
          <p role="status" data-testid="login-flash" className="mb-4 rounded-md bg-amber-50 px-3 py-2 text-sm text-amber-900 ring-1 ring-inset ring-amber-600/20">
            {flash}
          </p>
        )}

        <form onSubmit={submit} className="space-y-5 rounded-xl bg-white p-6 shadow-sm ring-1 ring-slate-900/5">
          <div>
            <label htmlFor="login-email" className="mb-1.5 block text-sm font-medium text-slate-700">
              Email
            </label>
            <input
              ref={emailRef}
              id="login-email"
              type="email"
              autoComplete="username"
              required
              value={email}
              onChange={(e) => setEmail(e.target.value)}
              className={input}
              aria-describedby={error ? errorId : undefined}
            />
          </div>
          <div>
            <label htmlFor="login-password" className="mb-1.5 block text-sm font-medium text-slate-700">
              Password
            </label>
            <input
              id="login-password"
              type="password"
              autoComplete="current-password"
              required
              value={password}
              onChange={(e) => setPassword(e.target.value)}
              className={input}
              aria-describedby={error ? errorId : undefined}
            />
          </div>
          {error && (
            <p id={errorId} role="alert" data-testid="login-error" className="rounded-md bg-rose-50 px-3 py-2 text-sm text-rose-800 ring-1 ring-inset ring-rose-600/20">
              {error}
            </p>
          )}
          <button
            type="submit"
            disabled={busy}
            className="flex w-full items-center justify-center gap-2 rounded-md bg-indigo-600 px-3 py-2 text-sm font-semibold text-white shadow-xs hover:bg-indigo-500 focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-indigo-600 disabled:cursor-wait disabled:opacity-70"
          >
            {busy && <span aria-hidden="true" className="size-4 animate-spin rounded-full border-2 border-white/40 border-t-white" />}
            {busy ? 'Signing in…' : 'Sign in'}
          </button>
        </form>
      </div>
    </main>
  );
}
