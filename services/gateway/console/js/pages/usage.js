// Usage: the model's tokens and what they cost, by day, as charts and a table.
import { api, query } from "../api.js";
import { fill, h } from "../dom.js";

const dollars = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 4 });

export async function render(main) {
  const from = new Date(Date.now() - 30 * 86400e3).toISOString();
  const report = await api.get(`/api/usage${query({ from })}`);
  const byDay = new Map();
  let priced = false;
  for (const row of report.days) {
    const d = byDay.get(row.day) || { tokens: 0, cost: 0 };
    d.tokens += row.input_tokens + row.output_tokens;
    if (row.cost_usd !== null && row.cost_usd !== undefined) {
      d.cost += row.cost_usd;
      priced = true;
    }
    byDay.set(row.day, d);
  }
  const days = [];
  for (let t = new Date(from); t <= new Date(); t = new Date(t.getTime() + 86400e3)) days.push(t.toISOString().slice(0, 10));
  const total = [...byDay.values()].reduce((a, d) => ({ tokens: a.tokens + d.tokens, cost: a.cost + d.cost }), { tokens: 0, cost: 0 });
  fill(main, h("h1", {}, "Usage"),
    h("p", { class: "muted" }, `The last 30 days: ${total.tokens.toLocaleString()} tokens`, priced ? `, ${dollars.format(total.cost)}` : "", "."),
    h("h2", {}, "Tokens per day"),
    barChart(days, days.map((d) => byDay.get(d)?.tokens || 0), "Tokens per day"),
    priced ? [h("h2", {}, "Cost per day"), barChart(days, days.map((d) => byDay.get(d)?.cost || 0), "Cost per day in US dollars", (v) => dollars.format(v))] : "",
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Day", "Provider", "Model", "Calls", "Input tokens", "Output tokens", "Cost"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, report.days.map((r) => h("tr", {},
        [r.day, r.provider, r.model, r.calls, r.input_tokens, r.output_tokens].map((v) => h("td", {}, String(v))),
        h("td", {}, r.cost_usd === null || r.cost_usd === undefined ? "price not set" : dollars.format(r.cost_usd))))))));
}

/** A bar chart as SVG (drawn with DOM calls: the CSP allows no inline markup or styles). */
export function barChart(labels, values, title, format = (v) => v.toLocaleString()) {
  const w = 640, hgt = 180, pad = 44;
  const max = Math.max(...values, 0) || 1;
  const bw = (w - pad) / Math.max(1, values.length);
  const svg = h("svg:svg", { viewBox: `0 0 ${w + 24} ${hgt + 20}`, class: "chart", role: "img",
    "aria-label": `${title}: ${format(values.reduce((a, b) => a + b, 0))} in all, at most ${format(max)} in one` },
  h("svg:title", {}, title),
  h("svg:line", { x1: pad, y1: hgt, x2: w, y2: hgt }),
  h("svg:text", { x: 0, y: 10 }, format(max)), h("svg:text", { x: 0, y: hgt }, format(0)));
  values.forEach((v, i) => {
    const bh = (v / max) * (hgt - 12);
    svg.append(h("svg:rect", { class: "bar", x: pad + i * bw + 1, y: hgt - bh, width: Math.max(1, bw - 2), height: bh },
      h("svg:title", {}, `${labels[i]}: ${format(v)}`)));
    if (i % Math.ceil(values.length / 6) === 0) svg.append(h("svg:text", { x: pad + i * bw, y: hgt + 14 }, labels[i].slice(5)));
  });
  return svg;
}
