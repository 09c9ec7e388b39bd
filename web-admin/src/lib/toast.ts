import { createStore } from './store';

export type ToastKind = 'success' | 'error' | 'info';
export interface Toast {
  id: number;
  kind: ToastKind;
  message: string;
}

export const toasts = createStore<readonly Toast[]>([]);
let nextId = 1;

export function dismissToast(id: number): void {
  toasts.set((list) => list.filter((t) => t.id !== id));
}

export function toast(kind: ToastKind, message: string, ms = kind === 'error' ? 8_000 : 5_000): number {
  const id = nextId++;
  toasts.set((list) => [...list.slice(-4), { id, kind, message }]);
  setTimeout(() => dismissToast(id), ms);
  return id;
}
