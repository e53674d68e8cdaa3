// Rules: standing instructions in plain language or the rule syntax, how each was understood,
// a backtest over past events, and every firing with its reason.
import { api, query } from "../api.js";
import { fill, h, time, toast } from "../dom.js";

export async function render(main, { route }) {
  if (route.rest[0]) return detail(main, route.rest[0]);
  const { rules } = await api.get("/api/rules");
  const text = h("textarea", { id: "rule-text", name: "text", required: true, rows: 4, spellcheck: "false",
    "aria-describedby": "rule-help rule-error",
    placeholder: "when gmail.email.received if from_domain = \"bigclient.com\" then notify message=\"{{event.subject}}\"\n\nor in plain words: Whenever a client emails about a rollover, draft a reply for me to approve." });
  const free = h("input", { type: "checkbox", id: "rule-free", name: "act_without_approval" });
  const error = h("div", { id: "rule-error", role: "alert" });
  const form = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    fill(error);
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const rule = await api.post("/api/rules", { text: text.value, act_without_approval: free.checked });
      location.hash = `#/rules/${rule.id}`;
    } catch (err) {
      showError(error, text, err);
    } finally {
      button.disabled = false;
    }
  } },
  h("h2", {}, "New rule"),
  h("label", { for: "rule-text" }, "What should happen"),
  h("p", { id: "rule-help", class: "muted small" }, "Write it in plain language (a model turns it into a rule, shown to you) or in the rule syntax: when <event> [if <condition>] then <action> …"),
  text,
  h("div", { class: "row" }, free, h("label", { for: "rule-free" }, "Let its writes run without asking me")),
  error,
  h("button", { type: "submit", class: "primary" }, "Save rule"));
  fill(main, h("h1", {}, "Rules"), form,
    h("h2", {}, "Your rules"),
    rules.length ? h("ul", { class: "list" }, rules.map((r) => h("li", { class: "card" },
      h("a", { href: `#/rules/${r.id}` }, r.text.length > 140 ? `${r.text.slice(0, 140)}…` : r.text),
      h("p", { class: "muted small" }, `${r.kind}${r.active ? "" : " · paused"}${r.act_without_approval ? " · acts without asking" : ""} · `, time(r.updated_at)))))
      : h("p", {}, "No rules yet."));
}

/** A 422 from the rule compiler: the message, and for a syntax error the line with the place marked. */
export function showError(box, textarea, err) {
  const pos = err.body?.position;
  if (!pos) {
    fill(box, h("p", { class: "error" }, err.message));
    return;
  }
  const lines = textarea.value.split("\n");
  const line = lines[pos.line - 1] ?? "";
  const col = Math.max(0, pos.column - 1);
  fill(box, h("div", { class: "rule-error", "data-line": pos.line, "data-column": pos.column },
    h("p", { class: "error" }, `Line ${pos.line}, column ${pos.column}: expected ${pos.expected}, found ${pos.found}`),
    h("pre", {}, line.slice(0, col), h("mark", {}, line.slice(col, col + 1) || " "), line.slice(col + 1))));
  // Put the caret where the problem is.
  const offset = lines.slice(0, pos.line - 1).reduce((n, l) => n + l.length + 1, 0) + col;
  textarea.focus();
  textarea.setSelectionRange(offset, Math.min(offset + 1, textarea.value.length));
}

async function detail(main, id) {
  const rule = await api.get(`/api/rules/${id}`);
  const compiled = rule.compiled || {};
  const canonical = compiled.canonical || compiled.trigger || null;
  const backtest = h("div", { "aria-live": "polite" });
  const firings = h("div");
  const active = h("button", { type: "button", onclick: async () => {
    try {
      const r = await api.put(`/api/rules/${id}`, { active: !rule.active });
      rule.active = r.active;
      fill(active, rule.active ? "Pause" : "Resume");
      toast(rule.active ? "Rule resumed" : "Rule paused");
    } catch (e) { toast(e.message); }
  } }, rule.active ? "Pause" : "Resume");
  fill(main,
    h("p", {}, h("a", { href: "#/rules" }, "← Rules")),
    h("h1", {}, "Rule"),
    h("section", { class: "card" },
      h("h2", {}, "You wrote"), h("pre", {}, rule.text),
      h("h2", {}, "How it was understood"),
      canonical ? h("pre", { "data-compiled": "" }, canonical) : h("p", { class: "muted" }, rule.kind === "memory" ? "A memory: the assistant keeps it in mind; it never fires." : "Not compiled."),
      compiled.rule ? h("details", {}, h("summary", {}, "Compiled form"), h("pre", {}, JSON.stringify(compiled.rule, null, 2))) : "",
      h("p", { class: "muted small" }, `${rule.kind} · ${rule.act_without_approval ? "acts without asking" : "writes wait for approval"}`),
      h("div", { class: "row" }, active,
        h("button", { type: "button", onclick: () => runBacktest(id, backtest) }, "Backtest on past events"),
        h("button", { type: "button", class: "danger", onclick: async () => {
          if (!confirm("Delete this rule? Its firings stay in the audit.")) return;
          await api.del(`/api/rules/${id}`);
          location.hash = "#/rules";
        } }, "Delete"))),
    h("h2", {}, "Backtest"), backtest,
    h("h2", {}, "Firings"), firings);
  const { firings: list } = await api.get(`/api/rules/${id}/firings${query({ limit: 100 })}`);
  fill(firings, list.length ? h("ul", { class: "list" }, list.map((f) => h("li", { class: "card" },
    h("p", {}, h("strong", {}, f.status), ` on ${f.event_type} `, time(f.created_at), f.task_id ? [" · ", h("a", { href: `#/tasks/${f.task_id}` }, "task")] : ""),
    h("details", {}, h("summary", {}, "Why"), h("pre", {}, JSON.stringify(f.detail, null, 2))))))
    : h("p", {}, "It has not fired yet."));
}

async function runBacktest(id, box) {
  fill(box, h("p", { class: "muted" }, "Running over your past events…"));
  try {
    const r = await api.post(`/api/rules/${id}/backtest`, {});
    fill(box, h("p", { "data-backtest": "" }, `${r.matched} of ${r.events_read} past events would have fired it${r.truncated ? " (showing the first ones)" : ""}.`),
      r.would_fire.length ? h("details", { open: true }, h("summary", {}, "What would have happened"),
        h("pre", {}, JSON.stringify(r.would_fire.slice(0, 20), null, 2))) : "");
  } catch (e) {
    fill(box, h("p", { class: "error" }, e.message));
  }
}
