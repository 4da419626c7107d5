// Charts of a deployment's cohorts over the last minutes, drawn by uPlot
// (vendor/uPlot.iife.min.js, loaded by the page before this module).

import { h } from './dom.js';

const COLOURS = { baseline: '#3b82f6', canary: '#f97316' };
const PALETTE = ['#10b981', '#a855f7', '#ef4444', '#eab308', '#14b8a6', '#ec4899'];

function colour(cohort, index) {
  return COLOURS[cohort] || PALETTE[index % PALETTE.length];
}

/**
 * One chart: for each cohort, one line per field (`{key, label, dash}`),
 * over the points `[{at, cohorts: {name: {p50, p99, crashRate}}}]`.
 */
export class CohortChart {
  constructor(title, fields, format) {
    this.fields = fields;
    this.format = format;
    this.plot = null;
    this.key = '';
    this.body = h('div', { class: 'chart-body' });
    this.el = h('figure', { class: 'chart' }, h('figcaption', {}, title), this.body);
    this.resize = new ResizeObserver(() => {
      if (this.plot) this.plot.setSize(this.size());
    });
    this.resize.observe(this.el);
  }

  size() {
    return { width: Math.max(280, this.el.clientWidth - 16), height: 200 };
  }

  update(points) {
    const cohorts = [...new Set(points.flatMap((p) => Object.keys(p.cohorts || {})))].sort();
    const key = cohorts.join('|');
    const xs = points.map((p) => p.at / 1000);
    const data = [xs];
    const series = [{}];
    cohorts.forEach((cohort, i) => {
      for (const field of this.fields) {
        data.push(points.map((p) => {
          const v = p.cohorts?.[cohort]?.[field.key];
          return v === undefined ? null : v;
        }));
        series.push({
          label: `${cohort} ${field.label}`,
          stroke: colour(cohort, i),
          dash: field.dash,
          width: 2,
          spanGaps: true,
          value: (_, v) => (v === null || v === undefined ? '–' : this.format(v)),
        });
      }
    });
    this.el.dataset.points = String(points.length);
    this.el.dataset.cohorts = key;
    if (!this.plot || key !== this.key) {
      if (this.plot) this.plot.destroy();
      this.key = key;
      this.body.replaceChildren();
      this.plot = new window.uPlot({
        ...this.size(),
        series,
        scales: { x: { time: true } },
        axes: [{}, { values: (_, ticks) => ticks.map((t) => this.format(t)), size: 70 }],
        legend: { live: true },
      }, data, this.body);
    } else {
      this.plot.setData(data);
    }
  }

  destroy() {
    this.resize.disconnect();
    if (this.plot) this.plot.destroy();
  }
}
