// Connections: Google, HubSpot and Slack; each source's sync state, progress and errors.
import { api } from "../api.js";
import { fill, h, time, toast } from "../dom.js";

const PROVIDERS = { google: "Google (Gmail and Calendar)", hubspot: "HubSpot", slack: "Slack" };
let timer = null;

export function leave() {
  clearTimeout(timer);
}

export async function render(main) {
  const { connections } = await api.get("/api/connections");
  const byProvider = new Map(connections.map((c) => [c.provider, c]));
  fill(main, h("h1", {}, "Connections"), Object.entries(PROVIDERS).map(([p, name]) => {
    const c = byProvider.get(p);
    const card = h("section", { class: "card", "aria-label": name, "data-provider": p }, h("h2", {}, name));
    if (!c) {
      card.append(h("p", { class: "muted" }, "Not connected."),
        h("a", { class: "button primary", href: `/api/auth/${p}/start?return_to=${encodeURIComponent("/#/connections")}` }, `Connect ${name.split(" ")[0]}`));
      return card;
    }
    card.append(
      h("p", {}, `${c.account_name || c.account_id} · `, h("strong", { class: c.status === "active" ? "ok" : "error" }, c.status)),
      c.last_error ? h("p", { class: "error" }, c.last_error) : "",
      h("ul", { class: "list" }, c.resources.map((r) => h("li", { class: "row", "data-resource": r.resource },
        h("strong", {}, r.resource),
        r.syncing ? h("span", { role: "status" }, `Syncing… ${r.items_synced} items so far`) : h("span", { class: "muted" }, `${r.items_synced} items · last sync `, time(r.last_sync_at) || "never"),
        r.last_error ? h("span", { class: "error" }, r.last_error) : "",
        h("button", { type: "button", disabled: r.syncing, onclick: async (e) => {
          e.currentTarget.disabled = true;
          try { await api.post(`/api/sync/${r.resource}`); toast(`Syncing ${r.resource}`); render(main); } catch (err) { toast(err.message); e.currentTarget.disabled = false; }
        } }, "Sync now")))),
      h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Disconnect ${name}? Its synced data stays until you delete it.`)) return;
        try { await api.del(`/api/connections/${p}`); render(main); } catch (err) { toast(err.message); }
      } }, "Disconnect"));
    return card;
  }));
  clearTimeout(timer);
  if (connections.some((c) => c.resources.some((r) => r.syncing))) {
    timer = setTimeout(() => { if (location.hash.startsWith("#/connections")) render(main); }, 3000);
  }
}
