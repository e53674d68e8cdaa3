// Usage: the model's tokens by day, as a chart and a table.
import { api, query } from "../api.js";
import { fill, h } from "../dom.js";

export async function render(main) {
  const from = new Date(Date.now() - 30 * 86400e3).toISOString();
  const report = await api.get(`/api/usage${query({ from })}`);
  const byDay = new Map();
  for (const row of report.days) {
    const d = byDay.get(row.day) || { input: 0, output: 0, calls: 0 };
    d.input += row.input_tokens; d.output += row.output_tokens; d.calls += row.calls;
    byDay.set(row.day, d);
  }
  const days = [];
  for (let t = new Date(from); t <= new Date(); t = new Date(t.getTime() + 86400e3)) days.push(t.toISOString().slice(0, 10));
  const values = days.map((d) => (byDay.get(d)?.input || 0) + (byDay.get(d)?.output || 0));
  fill(main, h("h1", {}, "Usage"), h("p", { class: "muted" }, "Tokens the model used for you each day, the last 30 days."),
    barChart(days, values, "Tokens per day"),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Day", "Provider", "Model", "Calls", "Input tokens", "Output tokens"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, report.days.map((r) => h("tr", {}, [r.day, r.provider, r.model, r.calls, r.input_tokens, r.output_tokens].map((v) => h("td", {}, String(v)))))))));
}

/** A bar chart as SVG (drawn with DOM calls: the CSP allows no inline markup or styles). */
export function barChart(labels, values, title) {
  const w = 640, hgt = 180, pad = 28;
  const max = Math.max(1, ...values);
  const bw = (w - pad) / Math.max(1, values.length);
  const svg = h("svg:svg", { viewBox: `0 0 ${w} ${hgt + 20}`, class: "chart", role: "img", "aria-label": `${title}: ${values.reduce((a, b) => a + b, 0)} in all, at most ${max} a day` },
    h("svg:title", {}, title),
    h("svg:line", { x1: pad, y1: hgt, x2: w, y2: hgt }),
    h("svg:text", { x: 0, y: 10 }, String(max)), h("svg:text", { x: 0, y: hgt }, "0"));
  values.forEach((v, i) => {
    const bh = (v / max) * (hgt - 12);
    svg.append(h("svg:rect", { class: "bar", x: pad + i * bw + 1, y: hgt - bh, width: Math.max(1, bw - 2), height: bh },
      h("svg:title", {}, `${labels[i]}: ${v}`)));
    if (i % Math.ceil(values.length / 6) === 0) svg.append(h("svg:text", { x: pad + i * bw, y: hgt + 14 }, labels[i].slice(5)));
  });
  return svg;
}
