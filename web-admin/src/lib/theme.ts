import { createStore } from './store';

/** 'system' follows the OS (prefers-color-scheme); the toggle's choice is kept in localStorage. */
export type ThemeChoice = 'light' | 'dark' | 'system';
const KEY = 'order-admin-theme';

function readChoice(): ThemeChoice {
  try {
    const v = window.localStorage.getItem(KEY);
    return v === 'light' || v === 'dark' ? v : 'system';
  } catch {
    return 'system';
  }
}

const media = window.matchMedia('(prefers-color-scheme: dark)');
export const themeChoice = createStore<ThemeChoice>(readChoice());
/** The theme in force: the choice, or the OS's when the choice is 'system'. */
export const darkMode = createStore<boolean>(false);

function apply(): void {
  const choice = themeChoice.get();
  const dark = choice === 'dark' || (choice === 'system' && media.matches);
  document.documentElement.classList.toggle('dark', dark);
  document.documentElement.style.colorScheme = dark ? 'dark' : 'light';
  darkMode.set(dark);
}

export function setTheme(choice: ThemeChoice): void {
  try {
    if (choice === 'system') window.localStorage.removeItem(KEY);
    else window.localStorage.setItem(KEY, choice);
  } catch {
    // private mode: the choice lasts for this page
  }
  themeChoice.set(choice);
  apply();
}

/** Called once before the first render, so the page never flashes the wrong theme. */
export function initTheme(): void {
  apply();
  media.addEventListener('change', apply);
}
