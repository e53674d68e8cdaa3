// Tasks: multi-step work from rules, its steps, what it waits for and until when.
import { api } from "../api.js";
import { fields, fill, h, time, toast } from "../dom.js";

export async function render(main, { route }) {
  if (route.rest[0]) return detail(main, route.rest[0]);
  const { tasks } = await api.get("/api/tasks");
  fill(main, h("h1", {}, "Tasks"),
    tasks.length ? h("ul", { class: "list" }, tasks.map((t) => h("li", { class: "card" },
      h("a", { href: `#/tasks/${t.id}` }, t.title),
      h("p", { class: "muted small" }, `${t.state} · step ${t.step + 1} of ${t.steps.length} · `, time(t.updated_at)))))
      : h("p", {}, "No tasks. Rules that wait for a reply start them."));
}

async function detail(main, id) {
  const t = await api.get(`/api/tasks/${id}`);
  const open = !["done", "failed", "cancelled"].includes(t.state);
  fill(main,
    h("p", {}, h("a", { href: "#/tasks" }, "← Tasks")),
    h("h1", {}, t.title),
    h("p", {}, h("strong", { "data-state": t.state }, t.state), t.error ? h("span", { class: "error" }, ` · ${t.error}`) : "",
      t.rule_id ? [" · ", h("a", { href: `#/rules/${t.rule_id}` }, "its rule")] : ""),
    h("h2", {}, "Steps"),
    h("ol", {}, t.steps.map((s, i) => h("li", { class: i < t.step ? "muted" : i === t.step && open ? "warn" : "" }, s))),
    t.waits.length ? [h("h2", {}, "Waits"), h("ul", { class: "list" }, t.waits.map((w) => h("li", { class: "card" },
      h("p", {}, `Step ${w.step + 1} (${w.state}) waits for `, h("code", {}, w.waits_for)),
      w.until ? h("p", { class: "small" }, "Deadline ", time(w.until)) : "",
      w.resolved_at ? h("p", { class: "small muted" }, "Resolved ", time(w.resolved_at)) : "")))] : "",
    t.invocations.length ? [h("h2", {}, "Actions"), h("ul", { class: "list" }, t.invocations.map((i) => h("li", { class: "card" },
      h("p", {}, h("strong", {}, i.tool), ` · ${i.status}`), fields(i.arguments))))] : "",
    open ? h("button", { type: "button", class: "danger", onclick: async (e) => {
      e.currentTarget.disabled = true;
      try {
        await api.post(`/api/tasks/${id}/cancel`);
        toast("Task cancelled");
        render(main, { route: { rest: [id] } });
      } catch (err) { toast(err.message); e.currentTarget.disabled = false; }
    } }, "Cancel task") : "");
}
