//! What a workload measured: named figures with units, notes, as text or as one JSON line.

use std::io::Write;

use crate::stats::{Latencies, median};

/// One figure.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A measured number.
    Num(f64),
    /// Text (a parameter, an address).
    Text(String),
}

/// The figures of one run of one workload, in the order they were added.
#[derive(Debug, Clone)]
pub struct Report {
    /// The workload's name (`room`, `idle`, ...).
    pub workload: String,
    entries: Vec<(String, Value, &'static str)>,
    notes: Vec<String>,
}

impl Report {
    /// An empty report for `workload`.
    pub fn new(workload: &str) -> Self {
        Self {
            workload: workload.to_owned(),
            entries: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a number with its unit (`msg/s`, `ms`, `KiB`; empty for a count).
    pub fn num(&mut self, key: &str, value: f64, unit: &'static str) -> &mut Self {
        self.entries.push((key.to_owned(), Value::Num(value), unit));
        self
    }

    /// Adds text.
    pub fn text(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.entries
            .push((key.to_owned(), Value::Text(value.into()), ""));
        self
    }

    /// Adds `<key>_p50_ms`, `<key>_p99_ms` and `<key>_max_ms`.
    pub fn latencies(&mut self, key: &str, l: &mut Latencies) -> &mut Self {
        if l.is_empty() {
            return self;
        }
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        self.num(&format!("{key}_p50_ms"), ms(l.quantile(0.50)), "ms");
        self.num(&format!("{key}_p99_ms"), ms(l.quantile(0.99)), "ms");
        self.num(&format!("{key}_max_ms"), ms(l.max()), "ms")
    }

    /// Adds a sentence for the reader (what bounded the run, what was skipped).
    pub fn note(&mut self, note: impl Into<String>) -> &mut Self {
        self.notes.push(note.into());
        self
    }

    /// The number recorded under `key`.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.entries.iter().find_map(|(k, v, _)| match v {
            Value::Num(n) if k == key => Some(*n),
            _ => None,
        })
    }

    /// The notes.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The report as one JSON object: `workload`, every figure by key, `notes`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert("workload".into(), self.workload.clone().into());
        for (k, v, _) in &self.entries {
            let value = match v {
                Value::Num(n) => serde_json::Number::from_f64(*n)
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::Null),
                Value::Text(t) => t.clone().into(),
            };
            map.insert(k.clone(), value);
        }
        map.insert(
            "notes".into(),
            self.notes
                .iter()
                .cloned()
                .map(serde_json::Value::from)
                .collect(),
        );
        serde_json::Value::Object(map)
    }

    /// A report read back from [`Report::to_json`] (units are not kept there).
    pub fn from_json(value: &serde_json::Value) -> Option<Report> {
        let map = value.as_object()?;
        let mut out = Report::new(map.get("workload")?.as_str()?);
        for (k, v) in map {
            match (k.as_str(), v) {
                ("workload" | "title", _) => {}
                ("notes", serde_json::Value::Array(notes)) => {
                    for n in notes.iter().filter_map(|n| n.as_str()) {
                        out.note(n);
                    }
                }
                (_, serde_json::Value::Number(n)) => {
                    out.num(k, n.as_f64()?, "");
                }
                (_, serde_json::Value::String(t)) => {
                    out.text(k, t.clone());
                }
                _ => {}
            }
        }
        Some(out)
    }

    /// The report for a terminal, one figure a line.
    pub fn write_text(&self, title: &str, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "{title}")?;
        let width = self
            .entries
            .iter()
            .map(|(k, ..)| k.len())
            .max()
            .unwrap_or(0);
        for (k, v, unit) in &self.entries {
            match v {
                Value::Num(n) => writeln!(out, "  {k:<width$}  {} {unit}", format_num(*n))?,
                Value::Text(t) => writeln!(out, "  {k:<width$}  {t}")?,
            }
        }
        for n in &self.notes {
            writeln!(out, "  note: {n}")?;
        }
        Ok(())
    }

    /// The median of each figure over `runs` (of one workload): numbers by their median, text
    /// from the first run; notes of every run, each once.
    pub fn median_of(runs: &[Report]) -> Option<Report> {
        let first = runs.first()?;
        let mut out = Report::new(&first.workload);
        for (k, v, unit) in &first.entries {
            match v {
                Value::Num(_) => {
                    let values: Vec<f64> = runs.iter().filter_map(|r| r.get(k)).collect();
                    if let Some(m) = median(&values) {
                        out.num(k, m, unit);
                    }
                }
                Value::Text(t) => {
                    out.text(k, t.clone());
                }
            }
        }
        out.text("runs", runs.len().to_string());
        for r in runs {
            for n in &r.notes {
                if !out.notes.contains(n) {
                    out.notes.push(n.clone());
                }
            }
        }
        Some(out)
    }
}

/// Three significant decimals for small numbers, fewer for large ones.
fn format_num(n: f64) -> String {
    let a = n.abs();
    if a == 0.0 || a >= 1000.0 {
        format!("{n:.0}")
    } else if a >= 10.0 {
        format!("{n:.1}")
    } else if a >= 0.1 {
        format!("{n:.2}")
    } else {
        format!("{n:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_report_takes_each_figure_s_median() {
        let runs: Vec<Report> = [3.0, 1.0, 2.0]
            .iter()
            .map(|v| {
                let mut r = Report::new("room");
                r.num("stored_msg_per_s", *v, "msg/s").text("node", "n");
                r
            })
            .collect();
        let m = Report::median_of(&runs).expect("runs");
        assert_eq!(m.get("stored_msg_per_s"), Some(2.0));
        assert_eq!(m.to_json()["node"], "n");
        assert_eq!(m.to_json()["runs"], "3");
    }
}
