// Approvals: every write waiting for the user, from chat, rules and tasks.
import { api } from "../api.js";
import { fill, h } from "../dom.js";
import { approvalCard } from "./chat.js";

export async function render(main) {
  const list = h("div");
  fill(main, h("h1", {}, "Approvals"), h("p", { class: "muted" }, "Writes the assistant, a rule or a task wants to make. Nothing here happens until you approve it, and then it happens once."), list);
  const { invocations } = await api.get("/api/approvals");
  if (!invocations.length) {
    fill(list, h("p", {}, "Nothing is waiting for you."));
    return;
  }
  fill(list, invocations.map((inv) => {
    const card = approvalCard({ approval_id: inv.id, tool: inv.tool, arguments: inv.arguments, reason: inv.approval_reason, expires_at: inv.expires_at });
    const origin = inv.conversation_id ? h("a", { href: `#/chat/${inv.conversation_id}` }, "from a conversation")
      : inv.task_id ? h("a", { href: `#/tasks/${inv.task_id}` }, "from a task")
        : inv.rule_id ? h("a", { href: `#/rules/${inv.rule_id}` }, "from a rule") : "";
    if (origin) card.insertBefore(h("p", { class: "small muted" }, "Asked ", origin), card.children[1]);
    return card;
  }));
}
