import { formatMoney } from '../lib/format';

interface Line {
  sku: string;
  qty: number;
  unitPriceCents: number;
  lineTotalCents: number;
}

interface Props {
  items: readonly Line[];
  amountCents: number;
  testId?: string;
  amountTestId?: string;
}

/** An order's lines and its amount: the drawer and the order page show the same table. */
export function OrderLines({ items, amountCents, testId, amountTestId }: Props) {
  return (
    <table className="w-full text-sm" data-testid={testId}>
      <thead>
        <tr className="border-b border-slate-200 text-left text-xs text-slate-600">
          <th scope="col" className="py-1.5 font-medium">SKU</th>
          <th scope="col" className="py-1.5 text-right font-medium">Qty</th>
          <th scope="col" className="py-1.5 text-right font-medium">Unit</th>
          <th scope="col" className="py-1.5 text-right font-medium">Total</th>
        </tr>
      </thead>
      <tbody className="divide-y divide-slate-100">
        {items.map((item) => (
          <tr key={item.sku}>
            <td className="py-2 font-mono text-xs text-slate-800">{item.sku}</td>
            <td className="py-2 text-right tabular-nums">{item.qty}</td>
            <td className="py-2 text-right tabular-nums text-slate-600">{formatMoney(item.unitPriceCents)}</td>
            <td className="py-2 text-right tabular-nums">{formatMoney(item.lineTotalCents)}</td>
          </tr>
        ))}
      </tbody>
      <tfoot>
        <tr className="border-t border-slate-200">
          <th scope="row" colSpan={3} className="py-2 text-right font-medium text-slate-700">
            Amount
          </th>
          <td className="py-2 text-right font-semibold tabular-nums text-slate-900" data-testid={amountTestId}>
            {formatMoney(amountCents)}
          </td>
        </tr>
      </tfoot>
    </table>
  );
}
