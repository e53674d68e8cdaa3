// Sign-in: Google when configured; the demo users in development.
import { api } from "../api.js";
import { fill, h } from "../dom.js";

export async function render(main, { onSignedIn }) {
  let methods = { google: false, demo: [] };
  try {
    methods = await api.get("/api/auth/methods", { allow401: true });
  } catch { /* shown below as no method */ }
  const status = h("p", { role: "alert", class: "error" });
  const card = h("div", { class: "card" }, h("h1", {}, "Sign in"));
  if (methods.google) {
    const back = encodeURIComponent(`/${location.hash || "#/chat"}`);
    card.append(h("a", { class: "button primary", href: `/api/auth/google/start?return_to=${back}` }, "Sign in with Google"));
  }
  for (const demo of methods.demo) {
    card.append(h("button", {
      type: "button",
      class: methods.google ? "" : "primary",
      onclick: async (e) => {
        e.currentTarget.disabled = true;
        try {
          await api.post("/api/auth/demo", { user: demo.user }, { allow401: true });
          await onSignedIn();
        } catch (err) {
          fill(status, err.message);
          e.currentTarget.disabled = false;
        }
      },
    }, `Enter as the demo ${demo.label}`), h("p", { class: "muted small" }, `${demo.email}: ${demo.description}`));
  }
  if (!methods.google && methods.demo.length === 0) {
    card.append(h("p", {}, "No way to sign in is configured: set GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET, or run `make run` (development, with the demo users)."));
  }
  card.append(status);
  fill(main, h("section", { class: "sign-in" }, card));
  card.querySelector("a, button")?.focus();
}
