import type { Role } from '../graphql/types';

const TOKEN_KEY = 'order-admin.token';
const EMAIL_KEY = 'order-admin.email';
const FLASH_KEY = 'order-admin.flash';

export const SESSION_EXPIRED_MESSAGE = 'Your session expired, please sign in again';
export const NOT_ADMIN_MESSAGE = 'This account is not an admin';

export interface Session {
  token: string;
  email: string;
  /** Seconds since the epoch, from the JWT's `exp`; null when the token has none. */
  exp: number | null;
  role: Role | null;
}

interface JwtClaims {
  sub?: string;
  role?: string;
  exp?: number;
}

/** Reads a JWT's claims without verifying it: the server does that, we only need exp/role. */
export function decodeJwt(token: string): JwtClaims | null {
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const json = decodeURIComponent(
      Array.from(atob(b64), (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''),
    );
    const claims: unknown = JSON.parse(json);
    return claims && typeof claims === 'object' ? (claims as JwtClaims) : null;
  } catch {
    return null;
  }
}

export function sessionFromToken(token: string, email: string): Session {
  const claims = decodeJwt(token);
  const role = claims?.role === 'ADMIN' || claims?.role === 'USER' ? claims.role : null;
  return { token, email, exp: typeof claims?.exp === 'number' ? claims.exp : null, role };
}

export function isExpired(session: Session, now = Date.now()): boolean {
  return session.exp !== null && session.exp * 1000 <= now;
}

export function loadSession(): Session | null {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return null;
  return sessionFromToken(token, sessionStorage.getItem(EMAIL_KEY) ?? '');
}

export function saveSession(session: Session): void {
  sessionStorage.setItem(TOKEN_KEY, session.token);
  sessionStorage.setItem(EMAIL_KEY, session.email);
}

export function clearSession(): void {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(EMAIL_KEY);
}

/** A one-shot message for the login page (survives the session's teardown, not a reload). */
export function setFlash(message: string | null): void {
  if (message) sessionStorage.setItem(FLASH_KEY, message);
  else sessionStorage.removeItem(FLASH_KEY);
}

export function takeFlash(): string | null {
  const message = sessionStorage.getItem(FLASH_KEY);
  sessionStorage.removeItem(FLASH_KEY);
  return message;
}
