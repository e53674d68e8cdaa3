// Chat: conversations, streamed answers with numbered citations, tool calls as they happen,
// approval cards inline. A reload or a lost connection resumes the turn's events after the last
// one shown (the API numbers them), so nothing repeats and nothing is lost.
import { api, query, randomKey, readEvents } from "../api.js";
import { cited, fields, fill, h, time, toast } from "../dom.js";

const LIVE = "console.live-turn";
let controller = null;

export function leave() {
  controller?.abort();
  controller = null;
}

export async function render(main, { route }) {
  const conversationId = route.rest[0] || null;
  const list = h("nav", { class: "conversations", "aria-label": "Conversations" });
  const messages = h("div", { class: "messages", "aria-live": "polite", "aria-busy": "false" });
  const thread = h("section", { class: "thread", "aria-label": "Conversation" }, messages);
  fill(main, h("h1", { class: "visually-hidden" }, "Chat"), h("div", { class: "chat" }, list, thread));
  let current = conversationId;
  const composer = composerFor(messages, {
    conversation: () => current,
    started: (id) => {
      // A new conversation: it is listed, and the address names it.
      if (current !== id) {
        current = id;
        listConversations(list, id).catch(() => {});
      }
    },
  });
  thread.append(composer.form);
  await Promise.all([listConversations(list, conversationId), showConversation(messages, conversationId)]);
  const live = stored();
  if (live && live.conversationId === conversationId && !live.finished) {
    composer.follow(new LiveTurn(messages, live));
  }
  // Ready to type, unless the person already went elsewhere (the header's search box) while
  // the page loaded.
  const active = document.activeElement;
  if (!active || active === document.body || main.contains(active)) composer.focus();
}

async function listConversations(list, selected) {
  const { conversations } = await api.get(`/api/conversations${query({ limit: 50 })}`);
  fill(list,
    h("a", { href: "#/chat", class: "button", "aria-current": selected ? null : "true" }, "New conversation"),
    h("ul", { class: "list" }, conversations.map((c) => h("li", {},
      h("a", { href: `#/chat/${c.id}`, "aria-current": c.id === selected ? "true" : null, title: c.title }, c.title || "Untitled")))));
}

async function showConversation(messages, id) {
  if (!id) {
    fill(messages, h("p", { class: "muted" }, "Ask about your clients, emails, meetings and CRM. Answers cite their sources; anything the assistant wants to send or change waits for your approval."));
    return;
  }
  const [detail, waiting] = await Promise.all([
    api.get(`/api/conversations/${id}`),
    api.get("/api/approvals"),
  ]);
  const live = stored();
  fill(messages, h("div", { class: "row" }, h("h2", { class: "conversation-title" }, detail.title || "Conversation"),
    h("button", { type: "button", class: "danger", onclick: async (e) => {
      if (!confirm("Delete this conversation with its turns and messages?")) return;
      e.currentTarget.disabled = true;
      try {
        await api.del(`/api/conversations/${id}`);
        if (stored()?.conversationId === id) clear();
        location.hash = "#/chat";
      } catch (err) {
        toast(err.message);
        e.currentTarget.disabled = false;
      }
    } }, "Delete conversation")));
  for (const turn of detail.turns) {
    if (live && live.turnId === turn.id && !isFinal(turn.status)) continue; // resumed below
    messages.append(userMessage(turn.message));
    const citations = new Map((turn.citations || []).map((c) => [c.n, c]));
    const reply = h("div", { class: "msg assistant" }, h("div", { class: "who-said" }, "Assistant"));
    for (const m of detail.messages.filter((m) => m.turn_id === turn.id && m.role === "assistant" && m.tool_calls)) {
      for (const call of m.tool_calls) reply.append(h("div", { class: "tool" }, `Used ${call.function?.name || call.name || "a tool"}`));
    }
    const body = h("div", { class: "body" });
    if (turn.final_text) fill(body, cited(turn.final_text, citations));
    else if (turn.status === "running") fill(body, h("span", { class: "muted" }, "Still answering…"));
    reply.append(body);
    if (turn.error_message) reply.append(h("p", { class: "error" }, turn.error_message));
    reply.append(sources(citations));
    for (const inv of waiting.invocations.filter((i) => i.turn_id === turn.id)) {
      reply.append(approvalCard({ approval_id: inv.id, tool: inv.tool, arguments: inv.arguments, reason: inv.approval_reason, expires_at: inv.expires_at }));
    }
    messages.append(reply);
  }
  if (live && live.conversationId === id && detail.turns.some((t) => t.id === live.turnId && isFinal(t.status))) {
    clear();
  }
  messages.scrollTop = messages.scrollHeight;
}

function isFinal(status) {
  return ["done", "failed", "cancelled"].includes(status);
}

function userMessage(text) {
  return h("div", { class: "msg user" }, h("div", { class: "who-said" }, "You"), h("div", { class: "body" }, text));
}

function sources(citations) {
  if (!citations.size) return "";
  return h("ol", { class: "sources", "aria-label": "Sources" }, [...citations.values()].sort((a, b) => a.n - b.n).map((c) =>
    h("li", { value: c.n },
      h("a", { href: c.link || `#/documents/${c.document_id}`, target: c.link ? "_blank" : null, rel: c.link ? "noopener noreferrer" : null, "data-source": c.n }, c.title || c.external_id),
      " ", h("span", { class: "muted small" }, `${c.source} ${c.kind}`), " ", time(c.occurred_at))));
}

/** An approval card: exactly what will be sent or changed, approve or reject. */
export function approvalCard(a, onDecided) {
  const status = h("p", { role: "status", class: "small" });
  const buttons = h("div", { class: "row" });
  const decide = async (what) => {
    for (const b of buttons.querySelectorAll("button")) b.disabled = true;
    try {
      const inv = await api.post(`/api/approvals/${a.approval_id}/${what}`);
      fill(status, what === "approve" ? "Approved: it runs once." : "Rejected: it will not run.");
      status.className = what === "approve" ? "small ok" : "small muted";
      buttons.remove();
      window.dispatchEvent(new CustomEvent("approvals-changed"));
      if (what === "approve") followOutcome(inv.id, status);
      onDecided?.(inv);
    } catch (e) {
      fill(status, e.message);
      status.className = "small error";
      for (const b of buttons.querySelectorAll("button")) b.disabled = false;
    }
  };
  buttons.append(
    h("button", { type: "button", class: "primary", onclick: () => decide("approve") }, "Approve"),
    h("button", { type: "button", class: "danger", onclick: () => decide("reject") }, "Reject"));
  return h("section", { class: "card approval", "aria-label": `Approval: ${a.tool}`, "data-approval": a.approval_id },
    h("h2", {}, `Waiting for your approval: ${a.tool}`),
    a.reason ? h("p", {}, a.reason) : "",
    fields(a.arguments),
    a.expires_at ? h("p", { class: "muted small" }, "Expires ", time(a.expires_at)) : "",
    buttons, status);
}

/** After an approval: what became of the write (done once, or failed). */
async function followOutcome(id, status) {
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    try {
      const { invocations } = await api.get(`/api/audit${query({ limit: 100 })}`);
      const inv = invocations.find((x) => x.id === id);
      if (inv && ["succeeded", "failed"].includes(inv.status)) {
        fill(status, inv.status === "succeeded" ? "Done: it ran once." : `It failed: ${inv.error || inv.status}`);
        status.className = inv.status === "succeeded" ? "small ok" : "small error";
        status.dataset.outcome = inv.status;
        return;
      }
    } catch { /* keep waiting */ }
  }
}

function composerFor(messages, { conversation, started }) {
  const input = h("textarea", { id: "chat-message", name: "message", required: true, maxlength: 16000, rows: 3,
    placeholder: "Ask the assistant…" });
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const cancel = h("button", { type: "button", hidden: true }, "Stop");
  const form = h("form", { class: "composer" },
    h("label", { for: "chat-message", class: "visually-hidden" }, "Message"), input, h("div", { class: "row" }, send, cancel,
      h("span", { class: "muted small" }, "Enter sends, Shift+Enter adds a line")));
  let turn = null;
  const follow = async (live) => {
    turn = live;
    send.disabled = true;
    cancel.hidden = false;
    cancel.onclick = async () => {
      cancel.disabled = true;
      try { await api.post(`/api/chat/turns/${live.state.turnId}/cancel`); } catch (e) { toast(e.message); }
    };
    await live.run();
    turn = null;
    send.disabled = false;
    cancel.hidden = true;
    cancel.disabled = false;
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const message = input.value.trim();
    if (!message || turn) return;
    input.value = "";
    if (!conversation()) fill(messages);
    messages.append(userMessage(message));
    const live = new LiveTurn(messages, { conversationId: conversation(), message, key: randomKey(), last: 0, text: "", citations: [], tools: [], approvals: [] });
    live.onStarted = started;
    await follow(live);
  });
  return { form, follow, focus: () => input.focus() };
}

function stored() {
  try { return JSON.parse(sessionStorage.getItem(LIVE)); } catch { return null; }
}
function clear() {
  sessionStorage.removeItem(LIVE);
}

/** One turn being answered: its events, drawn as they come, kept in sessionStorage. */
class LiveTurn {
  constructor(messages, state) {
    this.state = state;
    this.citations = new Map(state.citations.map((c) => [c.n, c]));
    this.body = h("div", { class: "body" });
    this.tools = h("div");
    this.approvals = h("div");
    this.sources = h("div");
    this.status = h("p", { class: "muted small", role: "status" }, "Thinking…");
    this.el = h("div", { class: "msg assistant", "data-turn": state.turnId || "" },
      h("div", { class: "who-said" }, "Assistant"), this.tools, this.body, this.sources, this.approvals, this.status);
    if (state.turnId && state.message) messages.append(userMessage(state.message));
    messages.append(this.el);
    this.messages = messages;
    for (const t of state.tools) this.drawTool(t);
    for (const a of state.approvals) this.approvals.append(approvalCard(a));
    this.draw();
  }

  save() {
    sessionStorage.setItem(LIVE, JSON.stringify({ ...this.state, citations: [...this.citations.values()] }));
  }

  draw() {
    fill(this.body, cited(this.state.text, this.citations));
    fill(this.sources, sources(this.citations));
    this.messages.scrollTop = this.messages.scrollHeight;
  }

  drawTool(t) {
    const line = h("div", { class: "tool", "data-tool-call": t.id },
      `${t.waiting ? "Waiting for your approval:" : t.ok === undefined ? "Running" : t.ok ? "Ran" : "Failed"} ${t.name}`, t.summary ? `: ${t.summary}` : "");
    const old = this.tools.querySelector(`[data-tool-call="${CSS.escape(t.id)}"]`);
    if (old) old.replaceWith(line); else this.tools.append(line);
  }

  /** Opens (or resumes) the turn's events and follows them to the end, reconnecting. */
  async run() {
    this.messages.setAttribute("aria-busy", "true");
    for (let attempt = 0; attempt < 8 && !this.state.finished; attempt++) {
      controller = new AbortController();
      try {
        const response = await this.open(controller.signal);
        await readEvents(response, (e) => this.on(e));
        attempt = 0;
      } catch (e) {
        if (e.name === "AbortError") break;
        if (e.status && e.status < 500 && e.status !== 429) {
          fill(this.status, e.message);
          this.status.className = "error small";
          break;
        }
        fill(this.status, "Connection lost; reconnecting…");
        await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 8000)));
      }
    }
    this.messages.setAttribute("aria-busy", "false");
    if (this.state.finished) clear();
  }

  async open(signal) {
    if (this.state.turnId) {
      const response = await fetch(`/api/chat/turns/${this.state.turnId}/events${query({ after: this.state.last })}`,
        { credentials: "same-origin", signal, headers: { Accept: "text/event-stream" } });
      if (!response.ok) throw Object.assign(new Error(`could not resume (${response.status})`), { status: response.status });
      return response;
    }
    const response = await fetch("/api/chat/stream", {
      method: "POST", credentials: "same-origin", signal,
      headers: { "Content-Type": "application/json", Accept: "text/event-stream", "Idempotency-Key": this.state.key },
      body: JSON.stringify({ conversation_id: this.state.conversationId, message: this.state.message }),
    });
    if (!response.ok) {
      let body = {};
      try { body = await response.json(); } catch { /* not JSON */ }
      throw Object.assign(new Error(body.detail || `could not send (${response.status})`), { status: response.status });
    }
    this.state.turnId = response.headers.get("x-turn-id");
    this.state.conversationId = response.headers.get("x-conversation-id");
    this.el.dataset.turn = this.state.turnId;
    history.replaceState(null, "", `#/chat/${this.state.conversationId}`);
    this.save();
    this.onStarted?.(this.state.conversationId);
    return response;
  }

  on({ id, event, data }) {
    const seq = Number(id);
    if (seq && seq <= this.state.last) return; // already shown
    if (seq) this.state.last = seq;
    switch (event) {
      case "delta":
        this.state.text += data.text;
        fill(this.status, "Answering…");
        this.draw();
        break;
      case "citation":
        this.citations.set(data.n, data);
        this.draw();
        break;
      case "tool_call": {
        const t = { id: data.id, name: data.name };
        this.state.tools.push(t);
        this.drawTool(t);
        fill(this.status, `Using ${data.name}…`);
        break;
      }
      case "tool_result": {
        const t = this.state.tools.find((x) => x.id === data.id) || { id: data.id, name: data.name };
        Object.assign(t, { ok: data.ok, summary: data.summary });
        this.drawTool(t);
        break;
      }
      case "approval_required": {
        const t = this.state.tools.find((x) => x.name === data.tool && x.ok === undefined);
        if (t) {
          t.waiting = true;
          this.drawTool(t);
        }
        this.state.approvals.push(data);
        this.approvals.append(approvalCard(data));
        window.dispatchEvent(new CustomEvent("approvals-changed"));
        break;
      }
      case "done":
        this.state.text = data.text;
        for (const c of data.citations || []) this.citations.set(c.n, c);
        this.state.finished = true;
        this.draw();
        fill(this.status, data.status === "waiting_approval" ? "Waiting for your approval." : "");
        this.el.dataset.done = "true";
        break;
      case "error":
        this.state.finished = true;
        fill(this.status, data.code === "cancelled" ? "Stopped." : data.message);
        this.status.className = data.code === "cancelled" ? "muted small" : "error small";
        this.el.dataset.done = "true";
        break;
      default:
        break;
    }
    this.save();
  }
}
