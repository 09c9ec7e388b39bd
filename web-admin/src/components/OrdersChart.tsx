import { BarController, BarElement, CategoryScale, Chart, Legend, LinearScale, LineController, LineElement, PointElement, Tooltip } from 'chart.js';
import { useEffect, useRef } from 'react';
import { formatMoney } from '../lib/format';
import { useStore } from '../lib/store';
import { darkMode } from '../lib/theme';

Chart.register(BarController, BarElement, LineController, LineElement, PointElement, CategoryScale, LinearScale, Tooltip, Legend);

export interface DayFigure {
  day: string;
  orders: number;
  revenueCents: number;
}

/** Orders (bars, left axis) and revenue (line, right axis) per day, drawn by Chart.js on a canvas. */
export function OrdersChart({ days }: { days: readonly DayFigure[] }) {
  const canvasRef = useRef<HTMLCanvasElement>(null);
  const dark = useStore(darkMode);

  useEffect(() => {
    if (!canvasRef.current) return;
    const text = dark ? '#cbd5e1' : '#475569';
    const grid = dark ? 'rgba(148,163,184,0.18)' : 'rgba(15,23,42,0.08)';
    const chart = new Chart(canvasRef.current, {
      data: {
        labels: days.map((d) => d.day.slice(5)),
        datasets: [
          { type: 'bar', label: 'Orders', data: days.map((d) => d.orders), backgroundColor: dark ? '#818cf8' : '#6366f1', yAxisID: 'orders', order: 2 },
          {
            type: 'line',
            label: 'Revenue',
            data: days.map((d) => d.revenueCents / 100),
            borderColor: dark ? '#34d399' : '#059669',
            backgroundColor: dark ? '#34d399' : '#059669',
            pointRadius: 2,
            cubicInterpolationMode: 'monotone',
            yAxisID: 'revenue',
            order: 1,
          },
        ],
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: 'index', intersect: false },
        plugins: {
          legend: { labels: { color: text } },
          tooltip: {
            callbacks: {
              label: (ctx) => (ctx.dataset.label === 'Revenue' ? `Revenue ${formatMoney(Math.round(Number(ctx.parsed.y) * 100))}` : `Orders ${ctx.parsed.y}`),
            },
          },
        },
        scales: {
          x: { ticks: { color: text, maxRotation: 0, autoSkipPadding: 8 }, grid: { display: false } },
          orders: { type: 'linear', position: 'left', beginAtZero: true, ticks: { color: text, precision: 0 }, grid: { color: grid }, title: { display: true, text: 'Orders', color: text } },
          revenue: {
            type: 'linear',
            position: 'right',
            beginAtZero: true,
            ticks: { color: text, callback: (v) => `$${Number(v).toLocaleString('en-US')}` },
            grid: { display: false },
            title: { display: true, text: 'Revenue', color: text },
          },
        },
      },
    });
    return () => chart.destroy();
  }, [days, dark]);

  const total = days.reduce((n, d) => n + d.orders, 0);
  const revenue = days.reduce((n, d) => n + d.revenueCents, 0);
  return (
    <figure className="m-0">
      <div className="relative h-64 sm:h-72">
        <canvas ref={canvasRef} role="img" aria-label={`Orders and revenue per day for the last ${days.length} days: ${total} orders, ${formatMoney(revenue)} revenue`} data-testid="orders-chart" />
      </div>
      <figcaption className="sr-only">Orders and revenue per day; the table below has the same figures.</figcaption>
      <table className="sr-only">
        <caption>Orders and revenue per day (UTC)</caption>
        <thead>
          <tr>
            <th scope="col">Day</th>
            <th scope="col">Orders</th>
            <th scope="col">Revenue</th>
          </tr>
        </thead>
        <tbody>
          {days.map((d) => (
            <tr key={d.day}>
              <th scope="row">{d.day}</th>
              <td>{d.orders}</td>
              <td>{formatMoney(d.revenueCents)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </figure>
  );
}
