// The shell: who is signed in, the navigation, and a page per hash route (#/chat, #/rules/…).
import { api } from "./api.js";
import { fill, h } from "./dom.js";
import * as signIn from "./pages/sign_in.js";
import * as chat from "./pages/chat.js";
import * as approvals from "./pages/approvals.js";
import * as rules from "./pages/rules.js";
import * as tasks from "./pages/tasks.js";
import * as insights from "./pages/insights.js";
import * as search from "./pages/search.js";
import * as connections from "./pages/connections.js";
import * as audit from "./pages/audit.js";
import * as usage from "./pages/usage.js";
import * as documents from "./pages/documents.js";

const pages = { chat, approvals, rules, tasks, insights, search, connections, audit, usage, documents };
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const top = document.querySelector(".top");
let me = null;
let current = null;

/** The route: "#/rules/abc?x=1" → {page: "rules", rest: ["abc"], params}. */
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, qs] = hash.split("?");
  const [page, ...rest] = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: page || "chat", rest, params: new URLSearchParams(qs || "") };
}

async function who() {
  try {
    return await api.get("/api/auth/me", { allow401: true });
  } catch {
    return null;
  }
}

function showShell(signedIn) {
  top.hidden = !signedIn;
  nav.hidden = !signedIn;
  if (signedIn) fill(top.querySelector(".who"), me.email);
}

async function render() {
  if (current?.leave) current.leave();
  current = null;
  const r = route();
  if (!me) {
    showShell(false);
    current = signIn;
    await signIn.render(main, { onSignedIn: start });
    return;
  }
  showShell(true);
  const page = pages[r.page] || null;
  for (const a of nav.querySelectorAll("a")) {
    if (a.getAttribute("href") === `#/${r.page}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  nav.classList.remove("open");
  top.querySelector(".menu").setAttribute("aria-expanded", "false");
  if (!page) {
    fill(main, h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/chat" }, "Go to chat")));
    return;
  }
  current = page;
  fill(main);
  try {
    await page.render(main, { route: r, me });
  } catch (e) {
    fill(main, h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, e.message));
  }
}

async function start() {
  me = await who();
  document.title = me ? "Assistant" : "Sign in · Assistant";
  await render();
  refreshApprovalCount();
}

/** The waiting approvals' count beside the navigation link. */
export async function refreshApprovalCount() {
  if (!me) return;
  const badge = nav.querySelector('[data-count="approvals"]');
  try {
    const { invocations } = await api.get("/api/approvals");
    badge.hidden = invocations.length === 0;
    fill(badge, String(invocations.length));
    badge.setAttribute("aria-label", `${invocations.length} waiting`);
  } catch {
    badge.hidden = true;
  }
}

window.addEventListener("hashchange", () => {
  render().then(() => main.focus({ preventScroll: true }));
});
window.addEventListener("signed-out", () => {
  if (me) {
    me = null;
    render();
  }
});
window.addEventListener("approvals-changed", refreshApprovalCount);
top.querySelector(".sign-out").addEventListener("click", async () => {
  try { await api.post("/api/auth/logout"); } catch { /* already out */ }
  me = null;
  location.hash = "#/chat";
  render();
});
top.querySelector(".menu").addEventListener("click", (e) => {
  const open = nav.classList.toggle("open");
  e.currentTarget.setAttribute("aria-expanded", String(open));
  if (open) nav.querySelector("a")?.focus();
});
top.querySelector(".global-search").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = e.currentTarget.elements.q.value.trim();
  if (q) location.hash = `#/search?q=${encodeURIComponent(q)}`;
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && nav.classList.contains("open")) {
    nav.classList.remove("open");
    top.querySelector(".menu").focus();
  }
});

start();
