// Building the page from elements, never from markup strings: every text from the API goes in as text.

/** An element: h("a", {href: "#/chat", class: "x", onclick: fn}, "text", child, ...). */
export function h(tag, attrs, ...children) {
  const el = tag.includes(":")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.split(":")[1])
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** "3 minutes ago", "in 2 hours", or a date. */
export function when(iso) {
  if (!iso) return "";
  const t = new Date(iso);
  const seconds = (t.getTime() - Date.now()) / 1000;
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const steps = [[60, "second"], [60, "minute"], [24, "hour"], [7, "day"]];
  let value = seconds;
  for (const [size, unit] of steps) {
    if (Math.abs(value) < size) return rtf.format(Math.round(value), unit);
    value /= size;
  }
  return t.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
}

/** An absolute time for a title attribute. */
export function stamp(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

/** A <time> element showing relative time with the exact time on hover. */
export function time(iso) {
  return iso ? h("time", { datetime: iso, title: stamp(iso) }, when(iso)) : "";
}

/** Shows a short message in the corner for a few seconds (announced to screen readers). */
export function toast(message) {
  const box = document.querySelector(".toast");
  const p = h("p", {}, message);
  box.append(p);
  setTimeout(() => p.remove(), 5000);
}

/** A definition list of an object's fields (a tool's arguments), values as text. */
export function fields(object) {
  const dl = h("dl");
  for (const [key, value] of Object.entries(object || {})) {
    const shown = typeof value === "string" ? value
      : Array.isArray(value) && value.every((v) => typeof v === "string") ? value.join(", ")
        : JSON.stringify(value, null, 2);
    dl.append(h("dt", {}, key), h("dd", {}, shown));
  }
  return dl;
}

/** Text with `**bold**` spans (as models and search snippets write them) in <strong>. */
function bold(text) {
  return text.split(/\*\*(.+?)\*\*/g).map((part, i) => (i % 2 ? h("strong", {}, part) : part));
}

/** Answer text with `[n]` markers as links to the sources they cite. */
export function cited(text, citations) {
  const out = [];
  const re = /\[(\d+)\]/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    out.push(bold(text.slice(last, m.index)));
    const n = Number(m[1]);
    const source = citations.get(n);
    out.push(source
      ? h("a", { class: "cite", href: source.link || `#/documents/${source.document_id}`,
        target: source.link ? "_blank" : null, rel: source.link ? "noopener noreferrer" : null,
        "aria-label": `Source ${n}: ${source.title}`, "data-cite": n }, `[${n}]`)
      : `[${n}]`);
    last = m.index + m[0].length;
  }
  out.push(bold(text.slice(last)));
  return out;
}

/** Text with `**marked**` spans as <mark> (search snippets). */
export function marked(text) {
  return text.split(/\*\*(.+?)\*\*/g).map((part, i) => (i % 2 ? h("mark", {}, part) : part));
}
