// Insights: what customers ask for, grouped into themes, with their quotes and the trend.
import { api, query } from "../api.js";
import { fill, h, time } from "../dom.js";
import { barChart } from "./usage.js";

const KINDS = { "": "Every kind", feature_request: "Feature requests", bug: "Bugs", pain_point: "Pain points", praise: "Praise", question: "Questions" };
const SORTS = { mentions: "Mentions", accounts: "Accounts", revenue: "Revenue (open deals)", recent: "Most recent" };
const money = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", maximumFractionDigits: 0 });

const PERIODS = { "": "All time", 7: "Last 7 days", 30: "Last 30 days", 90: "Last 90 days" };

export async function render(main, { route }) {
  if (route.rest[0]) return theme(main, route.rest[0]);
  const p = route.params;
  const sort = p.get("sort") || "mentions";
  const kind = p.get("kind") || "";
  const days = p.get("days") || "";
  const source = p.get("source") || "";
  const area = p.get("product_area") || "";
  const select = (id, options, value) => h("select", { id, onchange: change },
    Object.entries(options).map(([v, t]) => h("option", { value: v, selected: v === value }, t)));
  const sortSel = select("themes-sort", SORTS, sort);
  const kindSel = select("themes-kind", KINDS, kind);
  const daysSel = select("themes-days", PERIODS, days);
  const sourceIn = h("input", { id: "themes-source", value: source, placeholder: "slack, gmail, feedback…", size: 14, onchange: change });
  const areaIn = h("input", { id: "themes-area", value: area, placeholder: "any", size: 14, onchange: change });
  function change() {
    location.hash = `#/insights${query({ sort: sortSel.value, kind: kindSel.value, days: daysSel.value, source: sourceIn.value.trim(), product_area: areaIn.value.trim() })}`;
  }
  const since = days ? new Date(Date.now() - Number(days) * 86400e3).toISOString() : "";
  const { themes } = await api.get(`/api/insights/themes${query({ sort, kind, since, source, product_area: area, limit: 100 })}`);
  fill(main, h("h1", {}, "Insights"),
    h("form", { class: "row filters", onsubmit: (e) => { e.preventDefault(); change(); } },
      h("label", { for: "themes-sort" }, "Sort by"), sortSel,
      h("label", { for: "themes-kind" }, "Show"), kindSel,
      h("label", { for: "themes-days" }, "Said"), daysSel,
      h("label", { for: "themes-source" }, "Source"), sourceIn,
      h("label", { for: "themes-area" }, "Product area"), areaIn),
    themes.length ? h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Theme", "Kind", "Mentions", "Accounts", "Open deals", "Last seen"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, themes.map((t) => h("tr", {},
        h("td", {}, h("a", { href: `#/insights/${t.id}` }, t.title), h("div", { class: "muted small" }, t.summary)),
        h("td", {}, KINDS[t.kind] || t.kind), h("td", {}, String(t.items)), h("td", {}, String(t.accounts)),
        h("td", {}, money.format(t.open_deal_amount)), h("td", {}, time(t.last_seen)))))))
      : h("p", {}, source || area || days || kind ? "No themes match these filters." : "No themes yet. Turn on product intelligence in settings and connect Slack, Gmail or your call recorder."));
}

const WEEKS = 12;

async function theme(main, id) {
  const { theme: t, items } = await api.get(`/api/insights/themes/${id}${query({ limit: 500 })}`);
  // The weeks up to now; a theme quiet for longer shows the weeks up to its last mention.
  const quiet = Date.now() - new Date(t.last_seen).getTime() > WEEKS * 7 * 86400e3;
  const trend = await api.get(`/api/insights/themes/${id}/trend${query({ weeks: WEEKS, until: quiet ? t.last_seen : "" })}`);
  fill(main,
    h("p", {}, h("a", { href: "#/insights" }, "← Insights")),
    h("h1", {}, t.title),
    h("p", { class: "muted" }, `${KINDS[t.kind] || t.kind} · ${t.items} mentions · ${t.accounts} accounts · ${money.format(t.open_deal_amount)} in open deals · first `, time(t.first_seen), ", last ", time(t.last_seen)),
    h("h2", {}, "Mentions per week"), quiet ? h("p", { class: "muted small" }, "Up to its last mention.") : "",
    trendChart(trend), change(trend.change),
    h("h2", {}, "What customers said"),
    h("ul", { class: "list" }, items.map((i) => h("li", { class: "card", "data-item": i.id },
      h("blockquote", {}, `“${i.quote}”`),
      h("p", { class: "small" }, who(i.customer), i.company ? ` · ${i.company}` : "", " · ",
        h("a", { href: `#/documents/${i.document_id}${query({ start: i.span_start, end: i.span_end })}`, "data-quote-source": "" },
          i.document_title || `${i.source} ${i.external_id}`),
        " · ", time(i.occurred_at))))));
}

function who(customer) {
  if (!customer) return "Someone";
  return customer.name || customer.email || "Someone";
}

/** Mentions per week (weeks start on Monday, UTC), with the week's distinct accounts. */
function trendChart({ weeks }) {
  const chart = barChart(weeks.map((w) => w.week), weeks.map((w) => w.items), "Mentions per week");
  chart.querySelectorAll("rect.bar title").forEach((title, i) => {
    title.textContent += ` from ${weeks[i].accounts} ${weeks[i].accounts === 1 ? "account" : "accounts"}`;
  });
  return chart;
}

/** The last complete week against the weeks before it. */
function change(c) {
  const plural = (n, one) => `${n.toLocaleString()} ${one}${n === 1 ? "" : "s"}`;
  const versus = c.items_change == null
    ? "none in the weeks before"
    : `${c.items_change >= 0 ? "+" : "−"}${Math.round(Math.abs(c.items_change) * 100)}% against the ${c.trailing_weeks} weeks before (${c.trailing_items.toLocaleString(undefined, { maximumFractionDigits: 1 })} a week)`;
  return h("p", { class: "small", "data-change": c.items_change ?? "" },
    `Week of ${c.week}: ${plural(c.items, "mention")} from ${plural(c.accounts, "account")}, ${versus}.`);
}
