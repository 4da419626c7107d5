// The dashboard's views: each takes the app's context (state, session,
// actions) and returns the nodes to show. Nothing here talks to the hub
// but through `ctx.act` (writes) and `ctx.load` (reads).

import { h, table, num, pct, fixed, pValue, when, badge } from './dom.js';
import { CohortChart } from './charts.js';

const RANK = { player: 0, viewer: 1, developer: 2, operator: 3, admin: 4 };
const FINISHED = new Set(['Completed', 'RolledBack', 'Cancelled', 'Failed']);

/** Whether the signed-in role is at least `need`. */
export function can(ctx, need) {
  return (RANK[ctx.session.role] ?? 0) >= RANK[need];
}

function button(ctx, label, action, run, attrs = {}) {
  return h('button', {
    type: 'button', class: `action ${attrs.danger ? 'danger' : ''}`, 'data-action': action,
    disabled: ctx.busy.has(action) || undefined,
    onclick: run,
  }, label);
}

function tally(label, t) {
  return [label, num(t.servers), num(t.connected), num(t.healthy), num(t.stale), num(t.players)];
}

export function fleetView(ctx) {
  const fleet = ctx.state.fleet;
  if (!fleet) return h('p', { class: 'empty' }, 'waiting for the feed…');
  const t = fleet.total;
  const card = (label, value, tone) => h('div', { class: `card ${tone || ''}` },
    h('div', { class: 'value', 'data-metric': label }, num(value)), h('div', { class: 'label' }, label));
  const headers = ['', 'servers', 'connected', 'healthy', 'stale', 'players'];
  const revisions = Object.entries(fleet.revisions || {}).flatMap(([config, byRevision]) =>
    Object.entries(byRevision).map(([revision, servers]) => [config, revision, num(servers)]));
  return h('section', { id: 'fleet-view' },
    h('h2', {}, 'Fleet'),
    h('div', { class: 'cards' },
      card('servers', t.servers), card('connected', t.connected), card('healthy', t.healthy, 'good'),
      card('stale', t.stale, t.stale ? 'warn' : ''), card('players online', t.players)),
    h('div', { class: 'columns' },
      h('div', {}, h('h3', {}, 'By region'),
        table(headers, Object.entries(fleet.regions || {}).map(([k, v]) => tally(k, v)))),
      h('div', {}, h('h3', {}, 'By environment'),
        table(headers, Object.entries(fleet.environments || {}).map(([k, v]) => tally(k, v)))),
      h('div', {}, h('h3', {}, 'Applied revisions'),
        table(['config', 'revision', 'servers'], revisions))));
}

function progress(d) {
  const targets = Math.max(d.targets || 0, 1);
  const share = (n) => `${Math.min(100, (100 * Math.max(n, 0)) / targets).toFixed(1)}%`;
  const inFlight = Math.max((d.pushed || 0) - (d.acked || 0) - (d.failed || 0), 0);
  const segment = (cls, n) => {
    const el = h('div', { class: `segment ${cls}` });
    el.style.width = share(n);
    return el;
  };
  return h('div', { class: 'progress-wrap' },
    h('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': d.targets || 0, 'aria-valuenow': d.acked || 0 },
      segment('acked', d.acked || 0), segment('pushed', inFlight), segment('failed', d.failed || 0)),
    h('div', { class: 'progress-text' },
      `${num(d.acked)} acked · ${num(inFlight)} pushed, waiting · ${num(d.failed)} failed · of ${num(d.targets)}`));
}

export function deploymentsView(ctx) {
  const list = ctx.sortedDeployments();
  return h('section', { id: 'deployments-view' },
    h('h2', {}, 'Deployments'),
    table(['config', 'version', 'strategy', 'status', 'phase', 'progress', 'created'],
      list.map((d) => h('tr', { class: 'link', 'data-deployment': d.id, onclick: () => { location.hash = `#deployment/${d.id}`; } },
        h('td', {}, h('a', { href: `#deployment/${d.id}` }, d.config)), h('td', {}, d.version), h('td', {}, d.strategy),
        h('td', {}, badge(d.status)), h('td', {}, String(d.phase)), h('td', {}, progress(d)),
        h('td', {}, when(d.createdAt))))));
}

function controls(ctx, d) {
  if (!can(ctx, 'operator')) return null;
  const id = encodeURIComponent(d.id);
  const post = (action, confirmText) => () => ctx.act(action, `/api/v1/deployments/${id}/${action}`, { confirm: confirmText });
  const buttons = [];
  if (d.status === 'InProgress') buttons.push(button(ctx, 'Pause', 'pause', post('pause')));
  if (d.status === 'Paused') buttons.push(button(ctx, 'Resume', 'resume', post('resume')));
  if (d.status === 'InProgress' || d.status === 'Paused') {
    buttons.push(button(ctx, 'Promote', 'promote', post('promote', `Promote ${d.config} ${d.version} to the next phase now?`)));
    buttons.push(button(ctx, 'Roll back', 'rollback', post('rollback', `Roll ${d.config} back to revision ${d.previousRevision ?? '(none)'}?`), { danger: true }));
  }
  if (d.status === 'AwaitingApproval' && can(ctx, 'admin')) {
    buttons.push(button(ctx, 'Approve', 'approve', post('approve', `Approve ${d.config} ${d.version}?`)));
  }
  if (d.status === 'Completed' && ctx.newestCompleted(d.config) === d.id) {
    buttons.push(button(ctx, 'Kill switch: roll back', 'rollback',
      post('rollback', `Kill switch: put every server of ${d.config} back on revision ${d.previousRevision ?? '(none)'}?`), { danger: true }));
  }
  return buttons.length ? h('div', { class: 'controls' }, buttons) : null;
}

function rulesTable(d) {
  const outcomes = new Map((d.live?.judgement?.rules || []).map((r) => [r.metric, r]));
  const rules = Array.isArray(d.plan?.rules) ? d.plan.rules : [];
  const metrics = [...new Set([...rules.map((r) => r.metric), ...outcomes.keys()])];
  const byMetric = new Map(rules.map((r) => [r.metric, r]));
  const isRate = (rule) => rule?.comparison === 'absolute';
  const threshold = (rule, x) => (x === null || x === undefined ? '–' : isRate(rule) ? pct(x) : `${(x * 100).toFixed(0)} %`);
  return table(['rule', 'comparison', 'warning', 'critical', 'canary', 'baseline', 'change', 'p-value', 'samples', 'level'],
    metrics.map((metric) => {
      const rule = byMetric.get(metric);
      const o = outcomes.get(metric) || {};
      return h('tr', { 'data-rule': metric },
        h('td', {}, metric), h('td', {}, rule?.comparison ?? '–'), h('td', {}, threshold(rule, rule?.warning)),
        h('td', {}, threshold(rule, rule?.critical)), h('td', { class: 'num' }, fixed(o.canary, 4)),
        h('td', { class: 'num' }, fixed(o.baseline, 4)), h('td', { class: 'num' }, o.change === undefined || o.change === null ? '–' : pct(o.change, 1)),
        h('td', { class: 'num' }, pValue(o.pValue)), h('td', { class: 'num' }, o.samples ? `${num(o.samples[0])} / ${num(o.samples[1])}` : '–'),
        h('td', {}, o.level ? badge(o.level) : '–'));
    }));
}

function rankTable(d) {
  const tests = d.live?.judgement?.rankTests || [];
  return table(['rank test', 'p-value', 'P(canary worse)', 'samples', 'level'],
    tests.map((t) => [t.metric, pValue(t.pValue), fixed(t.probabilityWorse, 3),
      t.samples ? `${num(t.samples[0])} / ${num(t.samples[1])}` : '–', badge(t.level)]));
}

function timeline(d) {
  const steps = [['created', d.createdAt, `by ${d.createdBy}`]];
  if (d.approvedBy) steps.push(['approved', null, `by ${d.approvedBy}`]);
  if (d.phaseStartedAt) steps.push([`phase ${d.phase} started`, d.phaseStartedAt, '']);
  const r = d.rollback;
  if (r) {
    const evidence = r.metric ? `${r.metric}: canary ${fixed(r.observed, 4)} vs baseline ${fixed(r.baseline, 4)}${r.pValue !== undefined ? `, p = ${pValue(r.pValue)}` : ''}` : r.reason;
    steps.push(['regression detected', r.detectedAt, `${r.trigger} — ${evidence}`]);
    steps.push(['rollback started', r.rollbackStartedAt, `to revision ${r.toRevision ?? '(none)'} by ${r.by}`]);
    if (r.rollbackCompletedAt) {
      steps.push(['rollback completed', r.rollbackCompletedAt,
        `${r.durationMs !== undefined && r.durationMs !== null ? `${num(r.durationMs)} ms from detection to the last ack` : ''}${r.unacked?.length ? `; ${r.unacked.length} servers never acked` : ''}`]);
    }
  }
  if (d.completedAt) steps.push([d.status === 'Completed' ? 'completed' : `ended ${d.status}`, d.completedAt, '']);
  return h('ol', { class: 'timeline' }, steps.map(([what, at, detail]) =>
    h('li', { 'data-step': what }, h('strong', {}, what), ' ', h('span', { class: 'dim' }, at ? when(at) : ''), detail ? h('div', {}, detail) : null)));
}

function cohortsTable(d) {
  const cohorts = d.live?.cohorts || [];
  return table(['cohort', 'servers', 'reports', 'player-intervals', 'crash rate', 'latency p50', 'latency p99', 'error rate'],
    cohorts.map((c) => {
      const w = c.fastWindow || {};
      return [c.cohort, num(c.servers), num(w.reports), num(w.players), pct(w.crashRate, 3),
        w.latencyMs ? `${num(w.latencyMs.p50)} ms` : '–', w.latencyMs ? `${num(w.latencyMs.p99)} ms` : '–', pct(w.errorRate, 3)];
    }));
}

/**
 * The charts of one deployment into their slot, kept across renders
 * (uPlot holds state), fed the points the feed kept.
 */
export function mountCharts(ctx, slot) {
  const id = slot.dataset.deployment;
  let kept = ctx.charts.get(id);
  if (!kept) {
    kept = {
      latency: new CohortChart('Latency p50 (solid) and p99 (dashed), fast window', [
        { key: 'p50', label: 'p50' }, { key: 'p99', label: 'p99', dash: [6, 4] }], (v) => `${Math.round(v)} ms`),
      crashes: new CohortChart('Crash rate per player-interval, fast window', [{ key: 'crashRate', label: 'crashes' }],
        (v) => `${(v * 100).toFixed(2)} %`),
    };
    kept.el = h('div', { class: 'charts' }, kept.latency.el, kept.crashes.el);
    ctx.charts.set(id, kept);
  }
  if (slot.firstChild !== kept.el) slot.replaceChildren(kept.el);
  const points = ctx.state.history.get(id) || [];
  kept.latency.update(points);
  kept.crashes.update(points);
}

export function deploymentView(ctx, id) {
  const d = ctx.state.deployments.get(id);
  if (!d) {
    ctx.load(`/api/v1/deployments/${encodeURIComponent(id)}`, (view) => ctx.upsertDeployment(view));
    return h('p', { class: 'empty' }, `loading deployment ${id}…`);
  }
  const j = d.live?.judgement;
  const phases = Array.isArray(d.plan?.phases) ? d.plan.phases : [];
  return h('section', { id: 'deployment-view', 'data-id': d.id, 'data-status': d.status },
    h('p', {}, h('a', { href: '#deployments' }, '← deployments')),
    h('h2', {}, `${d.config} ${d.version} `, badge(d.status)),
    h('p', { class: 'meta' }, `${d.strategy} · ${d.environment} · revision ${d.revision} (from ${d.previousRevision ?? 'none'}) · phase ${d.phase}`,
      phases.length ? ` of ${phases.map((p) => `${p} %`).join(' → ')}` : ''),
    controls(ctx, d),
    progress(d),
    h('div', { class: 'columns' },
      h('div', {}, h('h3', {}, 'Timeline'), timeline(d)),
      h('div', {}, h('h3', {}, 'Cohorts'), cohortsTable(d),
        h('p', { class: 'meta' }, 'verdict ', j ? badge(j.verdict) : badge('notEnoughData'),
          d.live?.evaluatedAt ? ` evaluated ${when(d.live.evaluatedAt)}` : '',
          d.live?.warning ? h('span', { class: 'warn-text' }, ` — ${d.live.warning}`) : ''))),
    FINISHED.has(d.status) && !d.live ? null : h('div', { 'data-slot': 'charts', 'data-deployment': d.id }),
    h('h3', {}, 'Rollback rules'), rulesTable(d),
    h('h3', {}, 'Rank tests'), rankTable(d));
}

function timelineChart(ctx) {
  const tl = ctx.state.timeline;
  const items = tl?.items || [];
  if (!tl || !items.length) return h('p', { class: 'empty' }, 'no occurrences from 7 days back to 30 ahead');
  const from = Date.parse(tl.from);
  const to = Date.parse(tl.to);
  const now = Date.now();
  const span = Math.max(to - from, 1);
  const at = (t) => `${Math.min(100, Math.max(0, (100 * (t - from)) / span)).toFixed(3)}%`;
  const rows = new Map();
  for (const item of items) {
    if (!rows.has(item.event)) rows.set(item.event, []);
    rows.get(item.event).push(item);
  }
  const nowLine = h('div', { class: 'now', title: 'now' });
  nowLine.style.left = at(now);
  return h('div', { class: 'gantt' },
    [...rows.entries()].map(([event, occurrences]) => h('div', { class: 'gantt-row', 'data-event': event },
      h('div', { class: 'gantt-label' }, event),
      h('div', { class: 'gantt-track' }, occurrences.map((o) => {
        const start = Date.parse(o.start);
        const end = Date.parse(o.end);
        const phase = end <= now ? 'past' : start <= now ? 'active' : 'scheduled';
        const overlaps = o.overlaps || [];
        const bar = h('div', {
          class: `bar ${phase} ${overlaps.length ? 'overlap' : ''}`, 'data-phase': phase,
          title: `${event}${o.region ? ` (${o.region} local time)` : ''}: ${new Date(start).toLocaleString()} → ${new Date(end).toLocaleString()}${
            overlaps.length ? `\noverlaps ${overlaps.map((x) => `${x.event} on ${x.config}${x.path ? ` ${x.path}` : ''}`).join(', ')}` : ''}`,
        }, o.region || '', overlaps.length ? ' ⚠' : '');
        bar.style.left = at(start);
        bar.style.width = `max(3px, calc(${at(end)} - ${at(start)}))`;
        return bar;
      }), nowLine.cloneNode()))),
    h('div', { class: 'gantt-axis' }, h('span', {}, new Date(from).toLocaleDateString()), h('span', {}, 'now'), h('span', {}, new Date(to).toLocaleDateString())));
}

function participation(ctx, name) {
  const m = ctx.state.eventMetrics.get(name);
  if (!m) return h('p', { class: 'empty' }, 'loading participation…');
  const items = m.items || [];
  const t = m.telemetry;
  return h('div', { class: 'participation', 'data-event': name },
    h('h4', {}, `Participation: ${name}`),
    table(['occurrence', 'region', 'participants', 'participation', 'sessions', 'conversions', 'purchases'],
      items.map((i) => [when(i.occurrence), i.region, num(i.participants), pct(i.participationRate, 1), num(i.sessions), num(i.conversions), num(i.purchases)])),
    t ? h('p', { class: 'meta' }, `players' telemetry: ${num(t.participants)} participants, ${num(t.joins)} joins, ${num(t.completions)} completions, ${num(t.runs)} runs`) : null);
}

export function eventsView(ctx) {
  const events = ctx.state.events || [];
  const selected = ctx.selectedEvent;
  return h('section', { id: 'events-view' },
    h('h2', {}, 'Live events'),
    h('h3', {}, 'Timeline (7 days back, 30 ahead; ⚠ overlapping overrides)'), timelineChart(ctx),
    h('h3', {}, 'Events'),
    table(['event', 'state', 'active', 'next', ''], events.map((e) => h('tr', { 'data-event': e.name },
      h('td', {}, h('a', { href: '#events', onclick: (ev) => { ev.preventDefault(); ctx.selectEvent(e.name); } }, e.name)),
      h('td', {}, badge(e.state)),
      h('td', {}, (e.active || []).map((o) => `${o.region || 'all regions'} until ${new Date(o.end).toLocaleString()}`).join('; ') || '–'),
      h('td', {}, e.next ? when(e.next.start) : '–'),
      h('td', {}, can(ctx, 'operator') && (e.active || []).length
        ? button(ctx, 'End', `end:${e.name}`, () => ctx.act(`end:${e.name}`, `/api/v1/live-events/${encodeURIComponent(e.name)}/end`,
          { confirm: `End ${e.name} now, in every region?` }), { danger: true })
        : null)))),
    selected ? participation(ctx, selected) : null);
}

function lift(v, control) {
  const vs = v.vsControl;
  if (!vs) return '–';
  const base = control?.value;
  const rel = (x) => (base ? pct(x / base, 1) : fixed(x, 4));
  return `${vs.relative !== null && vs.relative !== undefined ? pct(vs.relative, 1) : fixed(vs.difference, 4)} [${rel(vs.interval.low)}, ${rel(vs.interval.high)}]`;
}

function results(ctx, name) {
  const r = ctx.state.results.get(name);
  if (!r) return h('p', { class: 'empty' }, 'loading results…');
  const srm = r.sampleRatio;
  return h('div', { class: 'results', 'data-experiment': name },
    h('p', {}, 'units: ', Object.entries(r.units || {}).map(([variant, n]) => `${variant} ${num(n)}`).join(' · '), ' ',
      srm ? (srm.mismatch
        ? badge(`sample ratio mismatch (p = ${pValue(srm.pValue)})`, 'bad')
        : badge(`split as weighted (p = ${pValue(srm.pValue)})`, 'good')) : badge('split: too few units', 'dim')),
    table(['metric', 'variant', 'units', 'value', '95 % interval', 'lift vs control [95 %]', 'p-value', 'sequential p'],
      (r.metrics || []).flatMap((m) => {
        const control = m.variants.find((v) => v.control);
        return m.variants.map((v) => [`${m.name}${m.primary ? ' (primary)' : ''}`, v.variant, num(v.units), fixed(v.value, 4),
          v.interval ? `[${fixed(v.interval.low, 4)}, ${fixed(v.interval.high, 4)}]` : '–',
          v.control ? 'control' : lift(v, control), pValue(v.vsControl?.pValue), pValue(v.vsControl?.sequentialPValue)]);
      })));
}

/** The experiments whose results are shown: the one picked, then running ones (5 in all). */
export function shownExperiments(ctx) {
  const items = (ctx.state.experiments?.items || []).filter((e) => e.status !== 'Draft');
  const picked = items.filter((e) => e.name === ctx.selectedExperiment);
  const live = items.filter((e) => e.name !== ctx.selectedExperiment && (e.status === 'Running' || e.status === 'Paused'));
  return [...picked, ...live].slice(0, 5);
}

export function experimentsView(ctx) {
  const items = ctx.state.experiments?.items || [];
  return h('section', { id: 'experiments-view' },
    h('h2', {}, 'Experiments'),
    table(['experiment', 'status', 'config', 'unit', 'variants', 'started'], items.map((e) => h('tr', {
      class: 'link', 'data-experiment': e.name, onclick: () => ctx.selectExperiment(e.name),
    }, h('td', {}, e.name), h('td', {}, badge(e.status)), h('td', {}, e.config), h('td', {}, e.unit),
    h('td', {}, (e.variants || []).map((v) => `${v.id} (${v.weight})`).join(', ')), h('td', {}, when(e.startedAt))))),
    shownExperiments(ctx).map((e) => h('div', { class: 'experiment' },
      h('h3', {}, e.name, ' ', badge(e.status)), results(ctx, e.name))));
}
