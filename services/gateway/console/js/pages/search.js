// Search over everything, with the API's ranking.
import { api, query } from "../api.js";
import { fill, h, marked, time } from "../dom.js";

export async function render(main, { route }) {
  const q = route.params.get("q") || "";
  const input = h("input", { id: "search-q", name: "q", type: "search", value: q, required: true, autocomplete: "off" });
  const results = h("div", { "aria-live": "polite" });
  const form = h("form", { role: "search", class: "row", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/search?q=${encodeURIComponent(input.value.trim())}`;
  } }, h("label", { for: "search-q", class: "visually-hidden" }, "Search"), input, h("button", { type: "submit", class: "primary" }, "Search"));
  fill(main, h("h1", {}, "Search"), form, results);
  input.focus();
  if (!q) return;
  fill(results, h("p", { class: "muted" }, "Searching…"));
  const r = await api.get(`/api/embeddings/search${query({ q, top_k: 20, time_zone: Intl.DateTimeFormat().resolvedOptions().timeZone })}`);
  const understood = [];
  if (r.understood?.time) understood.push(`${r.understood.time.words}`);
  for (const p of r.understood?.people || []) understood.push(p.name);
  fill(results,
    understood.length ? h("p", { class: "muted small" }, `Understood: ${understood.join(", ")}`) : "",
    r.hits.length ? h("ol", { class: "list" }, r.hits.map((hit) => h("li", { class: "card" },
      // The document view offers the provider's own link.
      h("h2", {}, h("a", { href: `#/documents/${hit.document_id}` }, hit.title || "(untitled)")),
      h("p", {}, marked(hit.snippet)),
      h("p", { class: "muted small" }, `${hit.source} ${hit.kind} `, time(hit.occurred_at)))))
      : h("p", {}, "Nothing matches."));
}
