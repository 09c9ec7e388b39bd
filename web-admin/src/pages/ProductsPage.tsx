import { useMutation, useQuery } from '@apollo/client';
import { useState, type FormEvent } from 'react';
import { PRODUCTS, UPSERT_PRODUCT, type Product } from '../graphql/backoffice';
import { errorMessage, hasCode } from '../lib/errors';
import { formatMoney } from '../lib/format';
import { toast } from '../lib/toast';
import { BUTTON, CARD, ErrorBox, INPUT, PageHeader, PRIMARY } from '../components/ui';

const TH = 'px-4 py-2.5 text-left text-xs font-semibold uppercase tracking-wide text-slate-600';

/** "12.50" → 1250; null when it is not an amount of dollars and cents. */
export function parsePrice(text: string): number | null {
  const m = /^\s*(\d{1,7})(?:\.(\d{1,2}))?\s*$/.exec(text);
  if (!m) return null;
  return Number(m[1]) * 100 + Number((m[2] ?? '0').padEnd(2, '0'));
}

function ProductForm({ initial, onDone, testId }: { initial: Product | null; onDone: () => void; testId: string }) {
  const [sku, setSku] = useState(initial?.sku ?? '');
  const [name, setName] = useState(initial?.name ?? '');
  const [price, setPrice] = useState(initial ? (initial.priceCents / 100).toFixed(2) : '');
  const [error, setError] = useState<string | null>(null);
  const [save, { loading }] = useMutation(UPSERT_PRODUCT, { refetchQueries: [PRODUCTS], awaitRefetchQueries: true });
  const prefix = initial ? `edit-${initial.sku}` : 'new';

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const priceCents = parsePrice(price);
    if (!sku.trim() || !name.trim()) return setError('SKU and name are required.');
    if (priceCents === null) return setError('The price is an amount like 12.50.');
    setError(null);
    try {
      await save({ variables: { input: { sku: sku.trim(), name: name.trim(), priceCents } } });
      toast('success', `Product ${sku.trim()} saved`);
      onDone();
    } catch (err) {
      if (!hasCode(err, 'UNAUTHENTICATED')) setError(errorMessage(err));
    }
  };

  return (
    <form onSubmit={(e) => void submit(e)} className="grid gap-3 sm:grid-cols-[10rem_1fr_8rem_auto] sm:items-end" data-testid={testId} noValidate>
      <div>
        <label htmlFor={`${prefix}-sku`} className="mb-1 block text-xs font-medium text-slate-600">
          SKU
        </label>
        <input id={`${prefix}-sku`} value={sku} onChange={(e) => setSku(e.target.value)} readOnly={Boolean(initial)} maxLength={64} className={`${INPUT} font-mono read-only:bg-slate-50`} />
      </div>
      <div>
        <label htmlFor={`${prefix}-name`} className="mb-1 block text-xs font-medium text-slate-600">
          Name
        </label>
        <input id={`${prefix}-name`} value={name} onChange={(e) => setName(e.target.value)} maxLength={200} className={INPUT} />
      </div>
      <div>
        <label htmlFor={`${prefix}-price`} className="mb-1 block text-xs font-medium text-slate-600">
          Price (USD)
        </label>
        <input id={`${prefix}-price`} value={price} inputMode="decimal" onChange={(e) => setPrice(e.target.value)} placeholder="12.50" className={`${INPUT} tabular-nums`} />
      </div>
      <div className="flex gap-2">
        <button type="submit" className={PRIMARY} disabled={loading}>
          {loading ? 'Saving…' : initial ? 'Save' : 'Create'}
        </button>
        {initial && (
          <button type="button" className={BUTTON} onClick={onDone}>
            Cancel
          </button>
        )}
      </div>
      {error && (
        <p role="alert" className="text-sm text-rose-800 sm:col-span-4">
          {error}
        </p>
      )}
    </form>
  );
}

export function ProductsPage() {
  const { data, error } = useQuery(PRODUCTS, { fetchPolicy: 'cache-and-network' });
  const [editing, setEditing] = useState<string | null>(null);
  const [formKey, setFormKey] = useState(0);

  return (
    <main id="main" className="mx-auto max-w-5xl px-4 py-6 sm:px-6 lg:py-8">
      <PageHeader title="Products" />
      <section aria-labelledby="new-product-h" className={`${CARD} mb-6 p-4`}>
        <h2 id="new-product-h" className="mb-3 text-base font-semibold text-slate-900">
          New product
        </h2>
        <ProductForm key={formKey} initial={null} testId="new-product" onDone={() => setFormKey((k) => k + 1)} />
      </section>
      {error && <ErrorBox>Could not load the products: {errorMessage(error)}</ErrorBox>}
      <section aria-labelledby="catalog-h" className={`${CARD} overflow-x-auto`}>
        <h2 id="catalog-h" className="sr-only">
          Catalog
        </h2>
        <table className="w-full" data-testid="products-table">
          <thead className="border-b border-slate-200 bg-slate-50">
            <tr>
              <th scope="col" className={TH}>SKU</th>
              <th scope="col" className={TH}>Name</th>
              <th scope="col" className={`${TH} text-right`}>Price</th>
              <th scope="col" className={TH}>
                <span className="sr-only">Action</span>
              </th>
            </tr>
          </thead>
          <tbody className="divide-y divide-slate-100">
            {data?.products.map((p) =>
              editing === p.sku ? (
                <tr key={p.sku}>
                  <td colSpan={4} className="px-4 py-3">
                    <ProductForm initial={p} testId={`edit-product-${p.sku}`} onDone={() => setEditing(null)} />
                  </td>
                </tr>
              ) : (
                <tr key={p.sku} data-testid={`product-${p.sku}`}>
                  <td className="px-4 py-3 font-mono text-xs text-slate-800">{p.sku}</td>
                  <td className="px-4 py-3 text-sm text-slate-900">{p.name}</td>
                  <td className="px-4 py-3 text-right text-sm tabular-nums">{formatMoney(p.priceCents)}</td>
                  <td className="px-4 py-3 text-right">
                    <button type="button" className={BUTTON} aria-label={`Edit ${p.sku}`} onClick={() => setEditing(p.sku)}>
                      Edit
                    </button>
                  </td>
                </tr>
              ),
            )}
          </tbody>
        </table>
      </section>
    </main>
  );
}
