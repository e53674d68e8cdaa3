// Insights: what customers ask for, grouped into themes, with their quotes and the trend.
import { api, query } from "../api.js";
import { fill, h, time, toast } from "../dom.js";
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
    h("p", { class: "small row" }, h("a", { href: "#/insights/curations" }, "Curation history"),
      h("a", { href: `/api/insights/export${query({ kind, since, source, product_area: area })}`, download: "insights.csv", "data-export": "csv" }, "Export CSV"),
      h("a", { href: `/api/insights/export${query({ format: "json", kind, since, source, product_area: area })}`, download: "insights.json" }, "Export JSON")),
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
  if (id === "curations") return curations(main);
  const { theme: t, items } = await api.get(`/api/insights/themes/${id}${query({ limit: 500 })}`);
  const { themes: others } = await api.get(`/api/insights/themes${query({ limit: 500 })}`);
  // The weeks up to now; a theme quiet for longer shows the weeks up to its last mention.
  const quiet = Date.now() - new Date(t.last_seen).getTime() > WEEKS * 7 * 86400e3;
  const trend = await api.get(`/api/insights/themes/${id}/trend${query({ weeks: WEEKS, until: quiet ? t.last_seen : "" })}`);
  fill(main,
    h("p", {}, h("a", { href: "#/insights" }, "← Insights")),
    h("h1", {}, t.title),
    h("p", { class: "muted" }, `${KINDS[t.kind] || t.kind} · ${t.items} mentions · ${t.accounts} accounts · ${money.format(t.open_deal_amount)} in open deals · first `, time(t.first_seen), ", last ", time(t.last_seen)),
    h("h2", {}, "Mentions per week"), quiet ? h("p", { class: "muted small" }, "Up to its last mention.") : "",
    trendChart(trend), change(trend.change),
    curate(main, t, others.filter((o) => o.id !== t.id)),
    h("h2", {}, "What customers said"),
    h("ul", { class: "list" }, items.map((i) => h("li", { class: "card", "data-item": i.id },
      h("blockquote", {}, `“${i.quote}”`),
      h("p", { class: "small" }, who(i.customer), i.company ? ` · ${i.company}` : "", " · ",
        h("a", { href: `#/documents/${i.document_id}${query({ start: i.span_start, end: i.span_end })}`, "data-quote-source": "" },
          i.document_title || `${i.source} ${i.external_id}`),
        " · ", time(i.occurred_at)),
      itemActions(main, t, i, others.filter((o) => o.id !== t.id))))));
}

/** Runs a curation, says so, and shows the page again. */
async function act(main, path, body, done, route = location.hash.slice(2).split("/")[1]) {
  try {
    const r = await api.post(path, body);
    toast(done);
    const next = r?.theme && typeof r.theme === "string" ? r.theme : route;
    if (location.hash !== `#/insights/${next}`) location.hash = `#/insights/${next}`;
    else render(main, { route: { rest: [next], params: new URLSearchParams() } });
  } catch (err) { toast(err.message); }
}

const options = (themes) => themes.map((o) => h("option", { value: o.id }, `${o.title} (${o.items})`));

/** Rename, merge into another theme, split the checked quotes off. */
function curate(main, t, others) {
  const title = h("input", { id: "theme-title", value: t.title, size: 40, maxlength: 200, required: true });
  const into = h("select", { id: "theme-into" }, options(others));
  const splitTitle = h("input", { id: "split-title", size: 30, maxlength: 200, placeholder: "the first quote's title" });
  return h("details", { class: "card curate" }, h("summary", {}, "Curate this theme"),
    h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); act(main, `/api/insights/themes/${t.id}/rename`, { title: title.value }, "Renamed"); } },
      h("label", { for: "theme-title" }, "Title"), title, h("button", { type: "submit" }, "Rename")),
    others.length ? h("form", { class: "row", onsubmit: (e) => {
      e.preventDefault();
      const target = into.value;
      act(main, `/api/insights/themes/${t.id}/merge`, { into: target }, "Merged", target);
    } }, h("label", { for: "theme-into" }, "Merge into"), into, h("button", { type: "submit" }, "Merge")) : "",
    h("form", { class: "row", onsubmit: (e) => {
      e.preventDefault();
      const chosen = [...main.querySelectorAll("input[data-split]:checked")].map((c) => c.value);
      if (!chosen.length) return toast("Check the quotes to split off first");
      act(main, `/api/insights/themes/${t.id}/split`, { items: chosen, title: splitTitle.value.trim() || undefined }, "Split into a new theme");
    } }, h("label", { for: "split-title" }, "Split the checked quotes into a theme titled"), splitTitle, h("button", { type: "submit" }, "Split")),
    h("p", { class: "small" }, h("a", { href: "#/insights/curations" }, "Curation history and undo")));
}

/** Per quote: check for a split, move to another theme, or dismiss as not feedback. */
function itemActions(main, t, i, others) {
  const move = h("select", { id: `move-${i.id}`, "aria-label": "Move this quote to" }, h("option", { value: "" }, "Move to…"), options(others));
  return h("p", { class: "row small item-actions" },
    h("label", {}, h("input", { type: "checkbox", value: i.id, "data-split": "" }), " split off"),
    move, h("button", { type: "button", onclick: () => move.value && act(main, `/api/insights/items/${i.id}/move`, { theme: move.value }, "Moved") }, "Move"),
    h("button", { type: "button", onclick: () => act(main, `/api/insights/items/${i.id}/dismiss`, {}, "Dismissed as not feedback") }, "Not feedback"));
}

/** Who curated what and when, newest first, with undo. */
async function curations(main) {
  const { curations: list } = await api.get("/api/insights/curations");
  const what = (c) => ({
    merge: "Merged a theme into another", split: `Split ${c.request.items?.length ?? ""} quotes off`,
    rename: `Renamed to “${c.request.title}”`, move: "Moved a quote", dismiss: "Dismissed a quote as not feedback",
  })[c.action] || c.action;
  fill(main, h("p", {}, h("a", { href: "#/insights" }, "← Insights")), h("h1", {}, "Curation history"),
    list.length ? h("ul", { class: "list" }, list.map((c) => h("li", { class: "card row", "data-curation": c.id, "data-action": c.action },
      h("span", {}, h("strong", {}, what(c)), " · ", c.actor, " · ", time(c.created_at)),
      c.undone_at ? h("span", { class: "muted" }, "undone by ", c.undone_by, " ", time(c.undone_at))
        : h("button", { type: "button", onclick: async () => {
          try { await api.post(`/api/insights/curations/${c.id}/undo`); toast("Undone"); curations(main); } catch (err) { toast(err.message); }
        } }, "Undo"))))
      : h("p", {}, "Nothing curated yet. Merge, split, rename, move or dismiss from a theme's page."));
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
