import { createContext, useContext } from 'react';
import type { LiveFeed } from './live';

export const LiveFeedContext = createContext<LiveFeed | null>(null);

export function useLiveFeed(): LiveFeed {
  const feed = useContext(LiveFeedContext);
  if (!feed) throw new Error('useLiveFeed outside an AdminSession');
  return feed;
}
