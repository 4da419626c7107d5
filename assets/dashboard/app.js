// The dashboard: who is signed in (GET /dashboard/session), the feed
// (/api/v1/stream: a snapshot, then changes), the views, and the actions,
// sent through the REST API with the session's CSRF token.

import { h, morph } from './dom.js';
import { fleetView, deploymentsView, deploymentView, eventsView, experimentsView, mountCharts, shownExperiments } from './views.js';

const HISTORY_POINTS = 600;
// Results and participation are read every 10 s, at most 5 experiments,
// only while their view is shown and the tab visible: a session shares its
// principal's rate limit (100 a minute by default) with the operator's CLI.
const POLL_MS = 10000;
const POLLED_EXPERIMENTS = 5;

const state = {
  fleet: null,
  deployments: new Map(),
  history: new Map(),
  events: [],
  timeline: null,
  experiments: null,
  results: new Map(),
  eventMetrics: new Map(),
};

const ctx = {
  state,
  session: null,
  busy: new Set(),
  charts: new Map(),
  selectedEvent: null,
  sortedDeployments: () => [...state.deployments.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1)),
  newestCompleted: (config) => ctx.sortedDeployments().find((d) => d.config === config && d.status === 'Completed')?.id,
  upsertDeployment(view) {
    state.deployments.set(view.id, view);
    render();
  },
  selectedExperiment: null,
  selectExperiment(name) {
    ctx.selectedExperiment = name;
    loadResults();
    render();
  },
  selectEvent(name) {
    ctx.selectedEvent = name;
    loadEventMetrics();
    render();
  },
  load,
  act,
};

const main = document.getElementById('main');
const connection = document.getElementById('connection');
const toasts = document.getElementById('toasts');

function toast(text, tone) {
  const el = h('div', { class: `toast ${tone}`, role: 'status' }, text);
  toasts.appendChild(el);
  setTimeout(() => el.remove(), tone === 'bad' ? 10000 : 4000);
}

/** The problem+json detail of a failed answer, or its status. */
async function problem(response) {
  try {
    const body = await response.json();
    return body.detail || body.title || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function signedOut() {
  location.assign('/dashboard/');
}

/** A read of the REST API, given to `then` (failures shown once). */
const loading = new Set();
// Reads wait this long after a 429 (its Retry-After).
let quietUntil = 0;
async function load(path, then) {
  if (loading.has(path) || Date.now() < quietUntil) return;
  loading.add(path);
  try {
    const response = await fetch(path, { credentials: 'same-origin', headers: { accept: 'application/json' } });
    if (response.status === 401) return signedOut();
    // Over the rate limit: no reads until Retry-After has passed.
    if (response.status === 429) {
      quietUntil = Date.now() + 1000 * Math.max(1, Number(response.headers.get('retry-after')) || 10);
      return;
    }
    if (!response.ok) {
      toast(`${path}: ${await problem(response)}`, 'bad');
      return;
    }
    then(await response.json());
  } catch (error) {
    toast(`${path}: ${error}`, 'bad');
  } finally {
    loading.delete(path);
  }
}

/** An action: a POST with the CSRF token, confirmed first when asked. */
async function act(name, path, { confirm: question, body } = {}) {
  if (question && !window.confirm(question)) return;
  ctx.busy.add(name);
  render();
  try {
    const response = await fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'x-csrf-token': ctx.session.csrfToken, 'content-type': 'application/json', accept: 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) return signedOut();
    if (!response.ok) {
      toast(`${name} refused: ${await problem(response)}`, 'bad');
      return;
    }
    const answer = await response.json().catch(() => null);
    if (answer && answer.id && answer.config && answer.status) ctx.upsertDeployment(answer);
    toast(`${name}: done`, 'good');
  } catch (error) {
    toast(`${name}: ${error}`, 'bad');
  } finally {
    ctx.busy.delete(name);
    render();
  }
}

function apply(message) {
  switch (message.type) {
    case 'snapshot':
      state.fleet = message.fleet;
      state.deployments = new Map((message.deployments || []).map((d) => [d.id, d]));
      state.history = new Map(Object.entries(message.history || {}));
      state.events = message.events || [];
      state.timeline = message.timeline;
      state.experiments = message.experiments;
      loadResults();
      break;
    case 'deployment': {
      state.deployments.set(message.deployment.id, message.deployment);
      if (message.point) {
        const points = state.history.get(message.deployment.id) || [];
        const last = points[points.length - 1];
        if (last && Math.floor(message.point.at / 1000) === Math.floor(last.at / 1000)) points.pop();
        points.push(message.point);
        if (points.length > HISTORY_POINTS) points.splice(0, points.length - HISTORY_POINTS);
        state.history.set(message.deployment.id, points);
      }
      break;
    }
    case 'fleet':
      state.fleet = message.fleet;
      break;
    case 'events':
      state.events = message.events || [];
      state.timeline = message.timeline;
      break;
    case 'experiments':
      state.experiments = message.experiments;
      break;
    default:
      return;
  }
  render();
}

let socket = null;
let retry = 1000;
function connect() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  socket = new WebSocket(`${scheme}://${location.host}/api/v1/stream`);
  let opened = false;
  socket.onopen = () => {
    opened = true;
    retry = 1000;
    setConnection('live', 'live');
  };
  socket.onmessage = (event) => {
    try {
      apply(JSON.parse(event.data));
    } catch (error) {
      console.error('feed message', error);
    }
  };
  socket.onclose = async (event) => {
    setConnection('reconnecting', event.reason ? `reconnecting (${event.reason})` : 'reconnecting');
    if (!opened) {
      // Refused at the upgrade: is the session still good?
      const response = await fetch('/dashboard/session', { credentials: 'same-origin' }).catch(() => null);
      if (response && response.status === 401) return signedOut();
    }
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
}

function setConnection(kind, text) {
  connection.dataset.state = kind;
  connection.textContent = text;
}

/** Experiment results and the selected event's participation, polled. */
function loadResults(polled = false) {
  if (route().view !== 'experiments' || (polled && document.hidden)) return;
  const shown = shownExperiments(ctx).slice(0, POLLED_EXPERIMENTS);
  // A finished experiment's results are read once.
  const due = shown.filter((e) => !polled || !state.results.has(e.name) || e.status === 'Running' || e.status === 'Paused');
  for (const e of due) {
    load(`/api/v1/experiments/${encodeURIComponent(e.name)}/results`, (r) => {
      state.results.set(e.name, r);
      render();
    });
  }
}

function loadEventMetrics(polled = false) {
  const name = ctx.selectedEvent;
  if (!name || route().view !== 'events' || (polled && document.hidden)) return;
  load(`/api/v1/live-events/${encodeURIComponent(name)}/metrics`, (m) => {
    state.eventMetrics.set(name, m);
    render();
  });
}

function route() {
  const [view, id] = location.hash.replace(/^#/, '').split('/');
  try {
    return { view: view || 'fleet', id: id ? decodeURIComponent(id) : null };
  } catch {
    // A malformed link: the fleet, rather than a page that stops updating.
    return { view: 'fleet', id: null };
  }
}

let scheduled = false;
function render() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    const { view, id } = route();
    for (const link of document.querySelectorAll('nav a')) {
      link.classList.toggle('current', link.dataset.view === (view === 'deployment' ? 'deployments' : view));
    }
    const node = view === 'deployment' && id ? deploymentView(ctx, id)
      : view === 'deployments' ? deploymentsView(ctx)
        : view === 'events' ? eventsView(ctx)
          : view === 'experiments' ? experimentsView(ctx)
            : fleetView(ctx);
    // The same view patched in place; another view replaces it.
    const shown = main.firstElementChild;
    if (shown && shown.id && shown.id === node.id && shown.dataset.id === node.dataset.id) morph(shown, node);
    else main.replaceChildren(node);
    const slot = main.querySelector('[data-slot="charts"]');
    if (slot) mountCharts(ctx, slot);
  });
}

async function start() {
  const response = await fetch('/dashboard/session', { credentials: 'same-origin' });
  if (!response.ok) return signedOut();
  ctx.session = await response.json();
  document.getElementById('who').textContent = `${ctx.session.subject} (${ctx.session.role})`;
  document.body.dataset.role = ctx.session.role;
  document.getElementById('sign-out').addEventListener('click', async () => {
    await fetch('/dashboard/session/end', { method: 'POST', credentials: 'same-origin', headers: { 'x-csrf-token': ctx.session.csrfToken } });
    signedOut();
  });
  window.addEventListener('hashchange', () => {
    loadResults();
    loadEventMetrics();
    render();
  });
  setInterval(() => {
    loadResults(true);
    loadEventMetrics(true);
  }, POLL_MS);
  connect();
  render();
}

start();
