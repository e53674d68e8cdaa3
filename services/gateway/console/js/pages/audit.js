// Audit: every tool invocation, why it happened and what became of it.
import { api, query } from "../api.js";
import { fill, h, time } from "../dom.js";

export async function render(main) {
  const { invocations } = await api.get(`/api/audit${query({ limit: 200 })}`);
  fill(main, h("h1", {}, "Audit"), h("p", { class: "muted" }, "Every action the assistant, your rules and tasks took or proposed, newest first."),
    invocations.length ? h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["When", "Tool", "Status", "From", "Arguments"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, invocations.map((i) => h("tr", {},
        h("td", {}, time(i.created_at)),
        h("td", {}, i.tool),
        h("td", { class: i.status === "succeeded" ? "ok" : ["failed", "dead", "rejected"].includes(i.status) ? "error" : "" }, i.status, i.error ? h("div", { class: "small" }, i.error) : ""),
        h("td", {}, i.conversation_id ? h("a", { href: `#/chat/${i.conversation_id}` }, "chat")
          : i.task_id ? h("a", { href: `#/tasks/${i.task_id}` }, "task") : i.rule_id ? h("a", { href: `#/rules/${i.rule_id}` }, "rule") : ""),
        h("td", {}, h("pre", {}, JSON.stringify(i.arguments, null, 1))))))))
      : h("p", {}, "Nothing yet."));
}
