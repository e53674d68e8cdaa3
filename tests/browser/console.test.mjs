// The web console in a real Chromium (Debian's, driven by playwright-core), against the real
// stack the Rust test `e2e::console` starts with the fake model. Run by that test; it passes
// BASE_URL, CHROMIUM, SHOTS (where screenshots go) and UPDATE_SCREENSHOTS (also write the
// README's screenshots to docs/screenshots).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const BASE = process.env.BASE_URL;
const SHOTS = process.env.SHOTS || "target/console-screenshots";
const README_SHOTS = process.env.UPDATE_SCREENSHOTS === "1" ? process.env.README_SHOTS : null;
mkdirSync(SHOTS, { recursive: true });
if (README_SHOTS) mkdirSync(README_SHOTS, { recursive: true });

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
});
after(async () => browser?.close());

/** A fresh browser context (its own cookies) and page; screenshots on failure. */
async function withPage(name, fn, options = {}) {
  const context = await browser.newContext({ locale: "en-US", timezoneId: "UTC", viewport: options.viewport || { width: 1280, height: 860 } });
  // The sources' own sites are not reachable from here: answer for them, to see what opened.
  await context.route(/^https:\/\/(mail\.google\.com|app\.hubspot\.com|www\.google\.com)\//, (route) =>
    route.fulfill({ status: 200, contentType: "text/html", body: "<title>provider</title>provider page" }));
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
  page.on("pageerror", (e) => problems.push(String(e)));
  try {
    await fn(page, context);
    const csp = problems.filter((p) => /Content Security Policy|Refused to/i.test(p));
    assert.deepEqual(csp, [], "the console broke its Content-Security-Policy");
  } catch (e) {
    await page.screenshot({ path: `${SHOTS}/failure-${name}.png`, fullPage: true }).catch(() => {});
    e.message += `\n(browser console: ${problems.join(" | ")})`;
    throw e;
  } finally {
    await context.close();
  }
}

async function shot(page, name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png` });
  if (README_SHOTS) await page.screenshot({ path: `${README_SHOTS}/${name}.png` });
}

async function signIn(page, who) {
  await page.goto(`${BASE}/#/chat`);
  const button = page.getByRole("button", { name: `Enter as the demo ${who}` });
  await button.waitFor();
  await button.click();
  // Signed in: the page header shows (the address in it only at desktop width).
  await page.locator("header.top").waitFor();
  await page.locator("main h1").first().waitFor();
}

/** Every form control on the page has a name a screen reader can say. */
async function assertLabelled(page) {
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll("input, textarea, select, button")]
    .filter((el) => el.offsetParent !== null || el.getClientRects().length)
    .filter((el) => {
      if (el.getAttribute("aria-label") || el.getAttribute("aria-labelledby")) return false;
      if (el.tagName === "BUTTON") return !el.textContent.trim();
      return !(el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`)) && !el.closest("label");
    })
    .map((el) => el.outerHTML.slice(0, 80)));
  assert.deepEqual(unlabelled, [], "controls without a label");
}

async function ask(page, message) {
  const box = page.getByLabel("Message");
  await box.fill(message);
  await box.press("Enter");
}

test("demo sign-in, a cited answer streams, and its citation opens the source", async () => {
  await withPage("cited-answer", async (page) => {
    await signIn(page, "advisor");
    await shot(page, "sign-in-done");
    await ask(page, "What does Maria have in her old 401(k)?");
    const answer = page.locator(".msg.assistant[data-done=true]").last();
    // It streams: text shows before the turn is done.
    await page.locator(".msg.assistant .body").last().filter({ hasText: "Maria" }).waitFor();
    await answer.waitFor({ timeout: 30000 });
    await assert.doesNotReject(answer.locator(".tool").filter({ hasText: "search_emails" }).waitFor());
    const cite = answer.locator("a.cite").first();
    await cite.waitFor();
    const href = await cite.getAttribute("href");
    assert.match(href, /^https:\/\/mail\.google\.com\/mail\/u\/0\/#all\/t-401k-maria$/);
    await shot(page, "chat");
    await assertLabelled(page);
    const [popup] = await Promise.all([page.waitForEvent("popup"), cite.click()]);
    await popup.waitForLoadState();
    assert.equal(popup.url(), href, "the citation opened its Gmail thread");
    // The conversation is listed and opens again with the same answer.
    const conversation = page.locator(".conversations a[aria-current=true]");
    await conversation.waitFor();
    await page.reload();
    await page.locator(".msg.assistant .body").filter({ hasText: "212,000" }).first().waitFor();
  });
});

test("a send waits for approval, and once approved it is sent once", async () => {
  await withPage("approval", async (page) => {
    await signIn(page, "advisor");
    await ask(page, "Send Maria an email about her rollover");
    const card = page.locator(".approval").last();
    await card.waitFor({ timeout: 30000 });
    // Exactly what will be sent is shown before anything is.
    await card.getByText("maria.alvarez@example.com").waitFor();
    await card.getByText("Your 401(k) rollover").waitFor();
    await page.locator(".msg.assistant[data-done=true]").last().getByText("Waiting for your approval.", { exact: true }).waitFor();
    await page.getByRole("link", { name: /Approvals/ }).locator(".badge").filter({ hasText: "1" }).waitFor();
    await shot(page, "approval");
    await card.getByRole("button", { name: "Approve" }).click();
    await card.getByText("Approved: it runs once.").waitFor();
    await card.locator("[data-outcome=succeeded]").waitFor({ timeout: 30000 });
    // The inbox is empty now.
    await page.goto(`${BASE}/#/approvals`);
    await page.getByText("Nothing is waiting for you.").waitFor();
  });
});

test("a reload in the middle of an answer resumes it without repeating anything", async () => {
  await withPage("reload", async (page) => {
    await signIn(page, "advisor");
    await ask(page, "Tell me slowly about Maria's 401(k)");
    const body = page.locator(".msg.assistant .body").last();
    await body.filter({ hasText: "Maria" }).waitFor();
    const before = await body.textContent();
    await page.reload();
    const done = page.locator(".msg.assistant[data-done=true]").last();
    await done.waitFor({ timeout: 30000 });
    const shown = (await done.locator(".body").textContent()).trim();
    // The stored answer, from the API, is what the page shows: once.
    const id = page.url().split("#/chat/")[1];
    const detail = await page.evaluate(async (c) => (await fetch(`/api/conversations/${c}`)).json(), id);
    const stored = detail.turns.at(-1).final_text.trim();
    assert.ok(before.length < stored.length, `the reload came mid-answer (${before.length} of ${stored.length})`);
    assert.equal(shown, stored);
    assert.equal(await page.locator(".msg.user").count(), 1, "the question is shown once");
  });
});

test("Stop cancels an answer while it streams, and the conversation can be deleted", async () => {
  await withPage("cancel", async (page) => {
    await signIn(page, "advisor");
    await ask(page, "Tell me slowly about Maria's 401(k), then stop");
    await page.locator(".msg.assistant .body").last().filter({ hasText: "Maria" }).waitFor();
    await page.getByRole("button", { name: "Stop" }).click();
    const done = page.locator(".msg.assistant[data-done=true]").last();
    await done.getByText("Stopped.", { exact: true }).waitFor({ timeout: 30000 });
    const id = page.url().split("#/chat/")[1];
    const detail = await page.evaluate(async (c) => (await fetch(`/api/conversations/${c}`)).json(), id);
    assert.equal(detail.turns.at(-1).status, "cancelled");
    // The composer is usable again.
    assert.equal(await page.getByRole("button", { name: "Send" }).isEnabled(), true);
    // Reopened, it can be deleted: gone from the list and from the API.
    await page.reload();
    page.once("dialog", (d) => d.accept());
    await page.getByRole("button", { name: "Delete conversation" }).click();
    await page.waitForURL(/#\/chat$/);
    assert.equal(await page.locator(`.conversations a[href="#/chat/${id}"]`).count(), 0);
    const status = await page.evaluate(async (c) => (await fetch(`/api/conversations/${c}`)).status, id);
    assert.equal(status, 404);
  });
});

test("usage shows tokens and their cost by day, as the API reports them", async () => {
  await withPage("usage", async (page) => {
    await signIn(page, "advisor");
    await page.goto(`${BASE}/#/usage`);
    await page.getByRole("heading", { name: "Cost per day" }).waitFor();
    const report = await page.evaluate(async () => (await fetch("/api/usage")).json());
    assert.ok(report.days.length > 0, "the chat tests used the model");
    const cost = report.days.reduce((a, d) => a + d.cost_usd, 0);
    const tokens = report.days.reduce((a, d) => a + d.input_tokens + d.output_tokens, 0);
    const summary = await page.locator("main p.muted").first().textContent();
    assert.ok(summary.includes(tokens.toLocaleString("en-US")), `${summary} (${tokens} tokens)`);
    const dollars = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 4 });
    assert.ok(summary.includes(dollars.format(cost)), `${summary} (${cost})`);
    assert.equal(await page.locator("svg.chart").count(), 2);
    await shot(page, "usage");
  });
});

test("a malformed rule shows its error at the line and column the compiler gives", async () => {
  await withPage("rule-error", async (page) => {
    await signIn(page, "advisor");
    await page.goto(`${BASE}/#/rules`);
    const text = "when gmail.email.received\nif from_domain = \"client.example\"\nthen notify message=";
    await page.getByLabel("What should happen").fill(text);
    await page.getByRole("button", { name: "Save rule" }).click();
    const error = page.locator(".rule-error");
    await error.waitFor();
    const api = await page.evaluate(async (t) => (await fetch("/api/rules", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ text: t }),
    })).json(), text);
    assert.ok(api.position, JSON.stringify(api));
    assert.equal(await error.getAttribute("data-line"), String(api.position.line));
    assert.equal(await error.getAttribute("data-column"), String(api.position.column));
    await error.getByText(`Line ${api.position.line}, column ${api.position.column}`).waitFor();
    // The caret is at the place.
    const lines = text.split("\n");
    const offset = lines.slice(0, api.position.line - 1).reduce((n, l) => n + l.length + 1, 0) + api.position.column - 1;
    const caret = await page.getByLabel("What should happen").evaluate((t) => t.selectionStart);
    assert.equal(caret, offset);
    await shot(page, "rules");
    await assertLabelled(page);
    // A good rule is saved and shown as it was understood.
    await page.getByLabel("What should happen").fill("when hubspot.contact.created then create_task type=welcome_call contact={{event.id}}");
    await page.getByRole("button", { name: "Save rule" }).click();
    await page.locator("[data-compiled]").waitFor();
    assert.match(await page.locator("[data-compiled]").textContent(), /hubspot\.contact\.created/);
  });
});

test("a theme's quotes open their source, for the product team", async () => {
  await withPage("insights", async (page) => {
    await signIn(page, "product team");
    await page.goto(`${BASE}/#/insights`);
    const first = page.locator("tbody tr a").first();
    await first.waitFor({ timeout: 30000 });
    await shot(page, "insights");
    // Filtered by source and sorted by accounts: the same themes, in the same order, as the API.
    await page.getByLabel("Sort by").selectOption("accounts");
    await page.waitForURL(/sort=accounts/);
    await page.getByLabel("Source").fill("slack");
    await page.getByLabel("Source").press("Enter");
    await page.waitForURL(/source=slack/);
    await page.locator("tbody tr, main p").first().waitFor();
    const api = await page.evaluate(async () => (await fetch("/api/insights/themes?sort=accounts&source=slack&limit=100")).json());
    const shown = await page.locator("tbody tr td:first-child a").allTextContents();
    assert.deepEqual(shown, api.themes.map((t) => t.title));
    // Its export holds the same items: one CSV row per mention.
    const href = await page.locator("[data-export=csv]").getAttribute("href");
    assert.match(href, /source=slack/);
    const csv = await page.evaluate(async (u) => (await fetch(u)).text(), href);
    const rows = csv.trim().split("\n").filter((l) => /^[0-9a-f]{8}-/.test(l));
    assert.equal(rows.length, api.themes.reduce((n, t) => n + t.items, 0));
    const all = await page.evaluate(async () => (await fetch("/api/insights/themes?limit=100")).json());
    assert.ok(api.themes.length > 0 && api.themes.length < all.themes.length, `slack ${api.themes.length} of ${all.themes.length}`);
    await page.goto(`${BASE}/#/insights`);
    await first.waitFor();
    await first.click();
    const quote = page.locator("[data-item]").first();
    await quote.waitFor();
    const said = (await quote.locator("blockquote").textContent()).replace(/^“|”$/g, "");
    // The chart is the API's trend: mentions and accounts per week.
    const id = page.url().split("#/insights/")[1];
    const { theme } = await page.evaluate(async (t) => (await fetch(`/api/insights/themes/${t}`)).json(), id);
    const quiet = Date.now() - new Date(theme.last_seen).getTime() > 12 * 7 * 86400e3;
    const trendUrl = `/api/insights/themes/${id}/trend?weeks=12${quiet ? `&until=${encodeURIComponent(theme.last_seen)}` : ""}`;
    const trend = await page.evaluate(async (u) => (await fetch(u)).json(), trendUrl);
    const bars = await page.locator("svg.chart rect.bar title").allTextContents();
    assert.deepEqual(bars, trend.weeks.map((w) => `${w.week}: ${w.items} from ${w.accounts} ${w.accounts === 1 ? "account" : "accounts"}`));
    assert.ok(trend.weeks.some((w) => w.items > 0), "the demo theme has mentions in its window");
    assert.equal(await page.locator("[data-change]").getAttribute("data-change"), String(trend.change.items_change ?? ""));
    await shot(page, "theme");
    await quote.locator("[data-quote-source]").click();
    const mark = page.locator(".document-body mark");
    await mark.waitFor();
    assert.equal((await mark.textContent()).trim(), said.trim(), "the source opens at the quote");
  });
});

test("a product team renames a theme and dismisses a quote, then undoes it from the history", async () => {
  await withPage("curate", async (page) => {
    await signIn(page, "product team");
    const api = (u) => page.evaluate(async (x) => (await fetch(x)).json(), u);
    await page.goto(`${BASE}/#/insights`);
    const first = page.locator("tbody tr a").first();
    await first.waitFor({ timeout: 30000 });
    await first.click();
    await page.locator("[data-item]").first().waitFor();
    const id = page.url().split("#/insights/")[1];
    await page.getByText("Curate this theme").click();
    await page.locator("#theme-title").fill("Invoice export to Excel and CSV");
    await page.getByRole("button", { name: "Rename" }).click();
    await page.locator("main h1", { hasText: "Invoice export to Excel and CSV" }).waitFor();
    assert.equal((await api(`/api/insights/themes/${id}`)).theme.title, "Invoice export to Excel and CSV");
    await assertLabelled(page);

    // A quote that is not feedback leaves the theme.
    const quote = page.locator("[data-item]").first();
    const item = await quote.getAttribute("data-item");
    await quote.getByRole("button", { name: "Not feedback" }).click();
    await page.locator(`[data-item="${item}"]`).waitFor({ state: "detached" });
    assert.ok(!(await api(`/api/insights/themes/${id}`)).items.some((i) => i.id === item));

    // The history says who did what, newest first; undo brings the quote back.
    await page.goto(`${BASE}/#/insights/curations`);
    const latest = page.locator("[data-curation]").first();
    await latest.waitFor();
    assert.equal(await latest.getAttribute("data-action"), "dismiss");
    assert.match(await latest.textContent(), /demo@product\.example/);
    await shot(page, "curations");
    await latest.getByRole("button", { name: "Undo" }).click();
    await page.locator("[data-curation] >> text=undone by").first().waitFor();
    assert.ok((await api(`/api/insights/themes/${id}`)).items.some((i) => i.id === item));
    const { curations } = await api("/api/insights/curations");
    assert.deepEqual(curations.map((c) => [c.action, Boolean(c.undone_at)]), [["dismiss", true], ["rename", false]]);
  });
});

test("the header's search box finds a document, which opens with its provider link", async () => {
  await withPage("search", async (page) => {
    await signIn(page, "advisor");
    const box = page.getByLabel("Search everything");
    await box.fill("401(k) rollover");
    await box.press("Enter");
    const hits = page.locator("main ol > li");
    await hits.first().waitFor();
    const api = await page.evaluate(async () => (await fetch("/api/embeddings/search?q=401(k)%20rollover&top_k=20")).json());
    assert.equal(await hits.count(), api.hits.length);
    assert.equal((await hits.first().locator("h2").textContent()).trim(), api.hits[0].title);
    await shot(page, "search");
    await hits.first().locator("h2 a").click();
    await page.locator(".document-body").waitFor();
    const open = page.locator("[data-open-source]");
    if (api.hits[0].source === "gmail") {
      assert.match(await open.getAttribute("href"), /^https:\/\/mail\.google\.com\//);
    }
  });
});

test("connections show what is connected and how to connect the rest", async () => {
  await withPage("connections", async (page) => {
    await signIn(page, "advisor");
    await page.goto(`${BASE}/#/connections`);
    const google = page.locator("[data-provider=google]");
    await google.getByRole("button", { name: "Disconnect" }).waitFor();
    const hubspot = page.locator("[data-provider=hubspot]");
    const connect = hubspot.getByRole("link", { name: "Connect HubSpot" });
    assert.equal(await connect.getAttribute("href"), `/api/auth/hubspot/start?return_to=${encodeURIComponent("/#/connections")}`);

    // Sync now: while the pass runs it shows the items read of Gmail's estimate, then the
    // outcome. The mailbox holds GMAIL_MESSAGES messages, each slow to read.
    const messages = process.env.GMAIL_MESSAGES;
    const gmail = google.locator("[data-resource=gmail]");
    await gmail.getByRole("button", { name: "Sync now" }).click();
    const progress = gmail.locator(".progress");
    await page.waitForFunction(() => Number(document.querySelector("[data-resource=gmail] .progress")?.dataset.done) > 0);
    assert.equal(await progress.getAttribute("data-total"), messages);
    assert.match(await progress.textContent(), new RegExp(`Syncing · \\d+ of about ${messages} items`));
    assert.equal(await gmail.getByRole("progressbar", { name: "gmail sync progress" }).getAttribute("max"), messages);
    await shot(page, "connections");
    await gmail.getByText(`${messages} items · last sync`).waitFor({ timeout: 30_000 });
    assert.equal(await progress.count(), 0);
  });
});

test("a task shows its steps, what it waits for until when, and can be cancelled", async () => {
  await withPage("tasks", async (page) => {
    await signIn(page, "advisor");
    await page.goto(`${BASE}/#/tasks`);
    // The Rust side started one task: a rule's, waiting for an agenda email.
    const { tasks } = await page.evaluate(async () => (await fetch("/api/tasks?state=waiting")).json());
    assert.equal(tasks.length, 1);
    await page.getByRole("link", { name: tasks[0].title }).click();
    await page.locator("main [data-state=waiting]").waitFor();
    const task = await page.evaluate(async (id) => (await fetch(`/api/tasks/${id}`)).json(), tasks[0].id);
    const steps = await page.locator("main ol li").allTextContents();
    assert.deepEqual(steps, task.steps);
    const wait = page.locator("main .card").filter({ hasText: "waits for" });
    assert.equal(await wait.locator("code").textContent(), task.waits[0].waits_for);
    assert.equal(await wait.locator("time").getAttribute("datetime"), task.waits[0].until);
    await shot(page, "tasks");
    await page.getByRole("button", { name: "Cancel task" }).click();
    await page.locator("main [data-state=cancelled]").waitFor();
    assert.equal(await page.getByRole("button", { name: "Cancel task" }).count(), 0);
    const after = await page.evaluate(async (id) => (await fetch(`/api/tasks/${id}`)).json(), tasks[0].id);
    assert.equal(after.state, "cancelled");
  });
});

test("keyboard alone signs in and moves between pages", async () => {
  await withPage("keyboard", async (page) => {
    await page.goto(`${BASE}/#/rules`);
    await page.getByRole("button", { name: "Enter as the demo advisor" }).waitFor();
    // The sign-in page puts focus on its first way in (Google, configured here); Tab reaches
    // the demo sign-in.
    assert.equal(await page.evaluate(() => document.activeElement.textContent), "Sign in with Google");
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement.textContent), "Enter as the demo advisor");
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Rules", exact: true }).waitFor();
    let reached = false;
    for (let i = 0; i < 25 && !reached; i++) {
      await page.keyboard.press("Tab");
      reached = await page.evaluate(() => document.activeElement?.getAttribute("href") === "#/audit");
    }
    assert.ok(reached, "the Audit link is reachable with Tab");
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Audit", exact: true }).waitFor();
  });
});

test("at phone width the menu opens and nothing scrolls sideways", async () => {
  await withPage("phone", async (page) => {
    await signIn(page, "advisor");
    const menu = page.getByRole("button", { name: "Menu" });
    await menu.click();
    await page.getByRole("link", { name: "Rules" }).click();
    await page.getByRole("heading", { name: "Rules", exact: true }).waitFor();
    for (const route of ["#/chat", "#/rules", "#/approvals", "#/search?q=rollover", "#/insights", "#/usage", "#/connections"]) {
      await page.goto(`${BASE}/${route}`);
      await page.locator("main h1").first().waitFor();
      const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(wide <= 0, `${route} is ${wide}px wider than the phone`);
    }
    await shot(page, "phone");
  }, { viewport: { width: 390, height: 844 } });
});
