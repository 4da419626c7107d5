//! Figures: percentiles of a sample, the terminal table, `report.json`
//! and an SVG chart of latency distributions.

use serde::Serialize;
use serde_json::{Map, Value, json};
use std::{fmt::Write as _, path::Path};

/// p50/p90/p99/max (nearest rank) of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank =
            |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        Some(Self {
            count: sorted.len(),
            p50: round(rank(0.50)),
            p90: round(rank(0.90)),
            p99: round(rank(0.99)),
            max: round(*sorted.last().expect("not empty")),
            mean: round(sorted.iter().sum::<f64>() / sorted.len() as f64),
        })
    }

    pub fn json(values: &[f64]) -> Value {
        Self::of(values).map_or(Value::Null, |s| json!(s))
    }
}

/// The run's report: top-level fields plus one object per scenario.
#[derive(Debug, Default)]
pub struct Report {
    pub fields: Map<String, Value>,
    /// Rows of the terminal table: (figure, value).
    pub rows: Vec<(String, String)>,
    /// Named samples for the chart (milliseconds).
    pub series: Vec<(String, Vec<f64>)>,
}

impl Report {
    pub fn set(&mut self, key: &str, value: Value) {
        self.fields.insert(key.to_owned(), value);
    }

    /// Sets `section.key` (creating the section).
    pub fn section(&mut self, section: &str, key: &str, value: Value) {
        let entry = self
            .fields
            .entry(section.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(map) = entry.as_object_mut() {
            map.insert(key.to_owned(), value);
        }
    }

    /// A sample in milliseconds: a summary row for the table and
    /// `section.key` in the JSON.
    pub fn sample(&mut self, section: &str, key: &str, values: &[f64]) {
        self.sample_in(section, key, values, "ms");
    }

    /// A sample in microseconds (CPU per server or socket).
    pub fn sample_us(&mut self, section: &str, key: &str, values: &[f64]) {
        self.sample_in(section, key, values, "µs");
    }

    /// [`Report::sample`] with the row's unit said.
    fn sample_in(&mut self, section: &str, key: &str, values: &[f64], unit: &str) {
        self.section(section, key, Summary::json(values));
        let text = match Summary::of(values) {
            Some(s) => format!(
                "p50 {:>9.2}  p90 {:>9.2}  p99 {:>9.2}  max {:>9.2}  (n={})",
                s.p50, s.p90, s.p99, s.max, s.count
            ),
            None => "no samples".to_owned(),
        };
        self.rows.push((format!("{section}.{key} ({unit})"), text));
    }

    pub fn row(&mut self, name: &str, value: impl std::fmt::Display) {
        self.rows.push((name.to_owned(), value.to_string()));
    }

    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let mut out = String::new();
        let _ = writeln!(out, "{}", "─".repeat(width + 70));
        for (name, value) in &self.rows {
            let _ = writeln!(out, "{name:<width$}  {value}");
        }
        let _ = writeln!(out, "{}", "─".repeat(width + 70));
        out
    }

    /// Writes `report.json` and `latency.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(&Value::Object(self.fields.clone()))?,
        )?;
        std::fs::write(dir.join("latency.svg"), cdf_svg(&self.series))?;
        Ok(())
    }
}

/// Cumulative distributions of the series on one chart (x: ms, log scale).
pub fn cdf_svg(series: &[(String, Vec<f64>)]) -> String {
    let (w, h, left, bottom) = (760.0, 420.0, 70.0, 50.0);
    let (plot_w, plot_h) = (w - left - 20.0, h - bottom - 30.0);
    let all = series.iter().flat_map(|s| s.1.iter().copied());
    let max = all.clone().fold(0.0f64, f64::max).max(1.0);
    let min = all.filter(|v| *v > 0.0).fold(max, f64::min).max(0.01);
    let (lo, hi) = (
        min.log10().floor(),
        max.log10().ceil().max(min.log10().floor() + 1.0),
    );
    let x = |v: f64| left + (v.max(min).log10() - lo) / (hi - lo) * plot_w;
    let y = |q: f64| 30.0 + (1.0 - q) * plot_h;
    let colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"];
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"18\" font-size=\"14\">Latency distribution (cumulative share of servers)</text>\n"
    );
    for decade in lo as i32..=hi as i32 {
        let v = 10f64.powi(decade);
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"30\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{3} ms</text>",
            x(v),
            30.0 + plot_h,
            30.0 + plot_h + 18.0,
            v
        );
    }
    for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#eee\"/><text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{4}%</text>",
            y(q),
            left + plot_w,
            left - 6.0,
            y(q) + 4.0,
            q * 100.0
        );
    }
    for (i, (name, values)) in series.iter().enumerate() {
        if values.is_empty() {
            continue;
        }
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let step = (sorted.len() / 400).max(1);
        let mut points = String::new();
        for (k, v) in sorted
            .iter()
            .enumerate()
            .step_by(step)
            .chain(std::iter::once((
                sorted.len() - 1,
                sorted.last().expect("not empty"),
            )))
        {
            let _ = write!(
                points,
                "{:.1},{:.1} ",
                x(*v),
                y((k + 1) as f64 / sorted.len() as f64)
            );
        }
        let color = colors[i % colors.len()];
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{points}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{}</text>",
            left + 10.0,
            45.0 + 16.0 * i as f64,
            xml_escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&values).unwrap();
        assert_eq!(
            (s.p50, s.p90, s.p99, s.max, s.count),
            (50.0, 90.0, 99.0, 100.0, 100)
        );
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[3.0]).unwrap().p99, 3.0);
    }

    #[test]
    fn the_report_nests_sections_and_the_chart_is_svg() {
        let mut report = Report::default();
        report.set("scenario", json!("fanout"));
        report.sample("fanout", "deliveryMs", &[1.0, 2.0, 3.0]);
        report.series.push(("hub".into(), vec![1.0, 2.0, 30.0]));
        assert_eq!(report.fields["fanout"]["deliveryMs"]["max"], 3.0);
        assert!(report.table().contains("fanout.deliveryMs"));
        let svg = cdf_svg(&report.series);
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    }
}
