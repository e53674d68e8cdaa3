// A stored document: what a citation, a search hit or a quote points at, with a link to open
// it at its provider (Gmail thread, HubSpot record, Calendar event) when there is one.
import { api } from "../api.js";
import { fill, h, time } from "../dom.js";

export async function render(main, { route }) {
  const doc = await api.get(`/api/documents/${route.rest[0]}`);
  const start = Number(route.params.get("start"));
  const end = Number(route.params.get("end"));
  fill(main,
    h("h1", {}, doc.title || "(untitled)"),
    h("p", { class: "muted" }, `${doc.source} ${doc.kind} · `, time(doc.occurred_at)),
    doc.link ? h("p", {}, h("a", { class: "button primary", href: doc.link, target: "_blank", rel: "noopener noreferrer", "data-open-source": "" }, `Open in ${doc.source}`)) : "",
    h("pre", { class: "document-body" }, highlighted(doc.body, start, end)),
    h("details", {}, h("summary", {}, "Details"), h("pre", {}, JSON.stringify(doc.metadata, null, 2))));
  main.querySelector("mark")?.scrollIntoView({ block: "center" });
}

/** The body with bytes [start, end) (a quote's span, counted in UTF-8 bytes) marked. */
function highlighted(body, start, end) {
  if (!(end > start)) return body;
  const bytes = new TextEncoder().encode(body);
  const dec = new TextDecoder();
  return [dec.decode(bytes.slice(0, start)), h("mark", {}, dec.decode(bytes.slice(start, end))), dec.decode(bytes.slice(end))];
}
