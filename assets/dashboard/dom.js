// Building the page from data without ever parsing it as HTML: every
// value a hub or a studio typed becomes a text node.

/** An element: `h('td', {class: 'num'}, 'text', child, [more])`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      // A property, not a listener: `morph` moves it onto the live node.
      el[key] = value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** A table: `table(['Region', 'Servers'], rows.map(r => [r.name, r.n]))`. */
export function table(headers, rows, attrs = {}) {
  return h('table', attrs,
    h('thead', {}, h('tr', {}, headers.map((name) => h('th', {}, name)))),
    h('tbody', {}, rows.length
      ? rows.map((cells) => (cells instanceof Node ? cells : h('tr', {}, cells.map((c) => (c instanceof Node && c.tagName === 'TD' ? c : h('td', {}, c))))))
      : h('tr', {}, h('td', { colspan: headers.length, class: 'empty' }, 'nothing yet'))));
}

export const num = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'));
export const pct = (x, digits = 2) => (x === null || x === undefined ? '–' : `${(x * 100).toFixed(digits)} %`);
export const fixed = (x, digits = 3) => (x === null || x === undefined ? '–' : Number(x).toFixed(digits));
export const pValue = (p) => (p === null || p === undefined ? '–' : p < 0.0001 ? p.toExponential(1) : p.toFixed(4));

/** A time as the operator's local clock, and how long ago or ahead. */
export function when(text) {
  if (!text) return '–';
  const at = new Date(text);
  if (Number.isNaN(at.getTime())) return String(text);
  return `${at.toLocaleString()} (${relative(at.getTime() - Date.now())})`;
}

export function relative(ms) {
  const ahead = ms > 0;
  let s = Math.abs(ms) / 1000;
  const unit = s < 90 ? `${Math.round(s)} s` : (s /= 60) < 90 ? `${Math.round(s)} min`
    : (s /= 60) < 36 ? `${Math.round(s)} h` : `${Math.round(s / 24)} d`;
  return ahead ? `in ${unit}` : `${unit} ago`;
}

/** A status badge whose colour follows its meaning. */
export function badge(text, kind) {
  const tone = kind || {
    Completed: 'good', InProgress: 'busy', Pending: 'busy', AwaitingApproval: 'warn', Paused: 'warn',
    RollingBack: 'bad', RolledBack: 'bad', Failed: 'bad', Cancelled: 'dim', Active: 'busy',
    Scheduled: 'dim', Ended: 'dim', Running: 'busy', Finished: 'dim', Draft: 'dim',
    pass: 'good', warning: 'warn', critical: 'bad', notEnoughData: 'dim',
    healthy: 'good', hold: 'warn', rollback: 'bad',
  }[text] || 'dim';
  return h('span', { class: `badge ${tone}`, 'data-status': text }, text);
}

const HANDLERS = ['onclick', 'onchange', 'oninput', 'onsubmit'];

/**
 * Patches the live node `from` into the shape of the freshly built `to`,
 * touching only what differs: a click under way (a button pressed as the
 * feed redraws the page) lands on the node it started on, and nothing
 * flickers. An element with `data-slot` keeps its own children (charts).
 */
export function morph(from, to) {
  if (from.nodeType !== to.nodeType || from.nodeName !== to.nodeName) {
    from.replaceWith(to);
    return to;
  }
  if (from.nodeType === Node.TEXT_NODE) {
    if (from.data !== to.data) from.data = to.data;
    return from;
  }
  if (from.nodeType !== Node.ELEMENT_NODE) {
    from.replaceWith(to);
    return to;
  }
  // `style` goes through the CSSOM (the page's policy forbids style
  // attributes written as markup).
  for (const { name } of [...from.attributes]) {
    if (name !== 'style' && !to.hasAttribute(name)) from.removeAttribute(name);
  }
  for (const { name, value } of [...to.attributes]) {
    if (name !== 'style' && from.getAttribute(name) !== value) from.setAttribute(name, value);
  }
  if (from.style.cssText !== to.style.cssText) from.style.cssText = to.style.cssText;
  for (const handler of HANDLERS) {
    if (from[handler] !== to[handler]) from[handler] = to[handler];
  }
  if ('disabled' in from && from.disabled !== to.disabled) from.disabled = to.disabled;
  if (to.dataset.slot !== undefined) return from;
  const old = [...from.childNodes];
  const fresh = [...to.childNodes];
  fresh.forEach((node, i) => {
    if (i < old.length) morph(old[i], node);
    else from.appendChild(node);
  });
  for (const node of old.slice(fresh.length)) node.remove();
  return from;
}
