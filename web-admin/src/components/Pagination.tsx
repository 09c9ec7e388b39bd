interface Props {
  page: number;
  pages: number;
  onPage: (page: number) => void;
  /** "Next" when the page has a cursor for the one after it (keyset: any depth costs page 1). */
  onNext?: () => void;
}

/** 1 … 4 5 6 … 12: first, last, and the current page's neighbours. */
export function pageList(page: number, pages: number): (number | 'gap')[] {
  const wanted = new Set([1, pages, page - 1, page, page + 1].filter((p) => p >= 1 && p <= pages));
  if (page <= 3) [2, 3, 4].forEach((p) => p <= pages && wanted.add(p));
  if (page >= pages - 2) [pages - 3, pages - 2, pages - 1].forEach((p) => p >= 1 && wanted.add(p));
  const sorted = [...wanted].sort((a, b) => a - b);
  const out: (number | 'gap')[] = [];
  sorted.forEach((p, i) => {
    const prev = sorted[i - 1];
    if (prev !== undefined && p - prev > 1) out.push(p - prev === 2 ? p - 1 : 'gap');
    out.push(p);
  });
  return out;
}

const BTN =
  'inline-flex h-9 min-w-9 items-center justify-center rounded-md px-2.5 text-sm font-medium focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-indigo-600 disabled:cursor-not-allowed disabled:opacity-40';

export function Pagination({ page, pages, onPage, onNext }: Props) {
  if (pages <= 1) return null;
  return (
    <nav aria-label="Pagination" className="flex flex-wrap items-center gap-1">
      <button type="button" className={`${BTN} text-slate-700 hover:bg-slate-100`} disabled={page <= 1} onClick={() => onPage(page - 1)} aria-label="Previous page">
        <span aria-hidden="true">‹</span>
        <span className="ml-1 hidden sm:inline">Prev</span>
      </button>
      {pageList(page, pages).map((p, i) =>
        p === 'gap' ? (
          <span key={`gap-${i}`} className="px-1 text-slate-400" aria-hidden="true">
            …
          </span>
        ) : (
          <button
            key={p}
            type="button"
            onClick={() => onPage(p)}
            aria-label={`Page ${p}`}
            aria-current={p === page ? 'page' : undefined}
            className={`${BTN} tabular-nums ${p === page ? 'bg-indigo-600 text-white hover:bg-indigo-600' : 'text-slate-700 hover:bg-slate-100'}`}
          >
            {p}
          </button>
        ),
      )}
      <button type="button" className={`${BTN} text-slate-700 hover:bg-slate-100`} disabled={page >= pages} onClick={() => (onNext ? onNext() : onPage(page + 1))} aria-label="Next page">
        <span className="mr-1 hidden sm:inline">Next</span>
        <span aria-hidden="true">›</span>
      </button>
    </nav>
  );
}
