// Connections: Google, HubSpot and Slack; each source's sync state, progress and errors.
import { api } from "../api.js";
import { fill, h, time, toast } from "../dom.js";

const PROVIDERS = { google: "Google (Gmail and Calendar)", hubspot: "HubSpot", slack: "Slack" };
let timer = null;
// Resources the person asked to sync, with their last sync time then.
const requested = new Map();

export function leave() {
  clearTimeout(timer);
}

const count = (n) => n.toLocaleString();

// A pass under way: items read of the provider's estimate, or a running count where the
// provider gives none (Calendar, Slack).
function progress(r) {
  const { done, total } = r.progress;
  const label = total == null ? `${count(done)} items read` : `${count(done)} of about ${count(total)} items`;
  const bar = h("progress", { "aria-label": `${r.resource} sync progress`, max: total ?? undefined, value: total == null ? undefined : done });
  const state = r.last_error ? "Stopped by an error; it will be retried" : "Syncing";
  return h("span", { class: "progress", role: "status", "data-done": done, "data-total": total ?? "" }, bar, ` ${state} · ${label}`);
}

export async function render(main) {
  const { connections } = await api.get("/api/connections");
  const byProvider = new Map(connections.map((c) => [c.provider, c]));
  // Re-rendered while a sync runs: keyboard focus stays on the control it was on.
  const focused = main.contains(document.activeElement) ? document.activeElement.id : "";
  fill(main, h("h1", {}, "Connections"), Object.entries(PROVIDERS).map(([p, name]) => {
    const c = byProvider.get(p);
    const card = h("section", { class: "card", "aria-label": name, "data-provider": p }, h("h2", {}, name));
    if (!c) {
      card.append(h("p", { class: "muted" }, "Not connected."),
        h("a", { class: "button primary", href: `/api/auth/${p}/start?return_to=${encodeURIComponent("/#/connections")}` }, `Connect ${name.split(" ")[0]}`));
      return card;
    }
    card.append(
      h("p", {}, `${c.account_name || c.account_id} · `, h("strong", { class: ["revoked", "error"].includes(c.status) ? "error" : "ok" }, c.status)),
      c.last_error ? h("p", { class: "error" }, c.last_error) : "",
      h("ul", { class: "list" }, c.resources.map((r) => h("li", { class: "row", "data-resource": r.resource },
        h("strong", {}, r.resource),
        r.progress ? progress(r) : h("span", { class: "muted" }, `${r.items_synced} items · last sync `, time(r.last_sync_at) || "never"),
        r.last_error ? h("span", { class: "error" }, r.last_error) : "",
        h("button", { type: "button", id: `sync-${r.resource}`, disabled: r.syncing, onclick: async (e) => {
          e.currentTarget.disabled = true;
          try {
            await api.post(`/api/sync/${r.resource}`);
            requested.set(r.resource, r.last_sync_at);
            toast(`Syncing ${r.resource}`);
            render(main);
          } catch (err) { toast(err.message); e.currentTarget.disabled = false; }
        } }, "Sync now")))),
      h("button", { type: "button", id: `disconnect-${p}`, class: "danger", onclick: async () => {
        if (!confirm(`Disconnect ${name}? Its synced data stays until you delete it.`)) return;
        try { await api.del(`/api/connections/${p}`); render(main); } catch (err) { toast(err.message); }
      } }, "Disconnect"));
    return card;
  }));
  if (focused) document.getElementById(focused)?.focus();
  // A requested sync is waited for until it has run (it may not have started yet).
  const resources = connections.flatMap((c) => c.resources);
  for (const r of resources) {
    if (requested.has(r.resource) && (r.last_error || r.last_sync_at !== requested.get(r.resource))) requested.delete(r.resource);
  }
  clearTimeout(timer);
  if (requested.size || resources.some((r) => r.syncing)) {
    timer = setTimeout(() => { if (location.hash.startsWith("#/connections")) render(main); }, 1000);
  }
}
