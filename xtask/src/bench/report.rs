//! The bench's figures: each a value with its unit and, where the issue sets one, a
//! target; printed as a table and written as JSON.

use serde_json::{Value, json};

/// What a figure should be.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    fn met(self, value: f64) -> bool {
        match self {
            Target::AtMost(t) => value <= t,
            Target::AtLeast(t) => value >= t,
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Target::AtMost(t) => format!("≤ {} {unit}", trim(t)),
            Target::AtLeast(t) => format!("≥ {} {unit}", trim(t)),
        }
    }
}

fn trim(v: f64) -> String {
    if (v.fract() == 0.0 && v.abs() < 1e12) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub section: &'static str,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub target: Option<Target>,
    pub note: String,
}

/// Every figure of a run, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub figures: Vec<Figure>,
    /// Raw measurements (wrk outputs, per-file sizes, Lighthouse audits…).
    pub details: serde_json::Map<String, Value>,
}

impl Report {
    pub fn add(
        &mut self,
        section: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) {
        self.push(section, name, value, unit, None, "");
    }

    pub fn target(
        &mut self,
        section: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        target: Target,
    ) {
        self.push(section, name, value, unit, Some(target), "");
    }

    pub fn push(
        &mut self,
        section: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        target: Option<Target>,
        note: &str,
    ) {
        let figure = Figure {
            section,
            name: name.into(),
            value,
            unit,
            target,
            note: note.to_owned(),
        };
        println!("  {}", line(&figure));
        self.figures.push(figure);
    }

    pub fn detail(&mut self, name: &str, value: Value) {
        self.details.insert(name.to_owned(), value);
    }

    /// (met, missed) among figures with a target.
    pub fn tally(&self) -> (usize, usize) {
        let with: Vec<_> = self
            .figures
            .iter()
            .filter_map(|f| f.target.map(|t| t.met(f.value)))
            .collect();
        let met = with.iter().filter(|m| **m).count();
        (met, with.len() - met)
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut section = "";
        for f in &self.figures {
            if f.section != section {
                section = f.section;
                out.push_str(&format!("\n{section}\n"));
            }
            out.push_str(&format!("  {}\n", line(f)));
        }
        out
    }

    pub fn json(&self, meta: Value) -> Value {
        let figures: Vec<Value> = self
            .figures
            .iter()
            .map(|f| {
                json!({
                    "section": f.section,
                    "name": f.name,
                    "value": f.value,
                    "unit": f.unit,
                    "target": f.target.map(|t| t.describe(f.unit)),
                    "met": f.target.map(|t| t.met(f.value)),
                    "note": (!f.note.is_empty()).then_some(&f.note),
                })
            })
            .collect();
        json!({"meta": meta, "figures": figures, "details": self.details})
    }
}

fn line(f: &Figure) -> String {
    let value = format!("{} {}", trim(f.value), f.unit);
    let target = match f.target {
        Some(t) => format!(
            "{} {}",
            if t.met(f.value) { "✓" } else { "✗" },
            t.describe(f.unit)
        ),
        None => String::new(),
    };
    let note = if f.note.is_empty() {
        String::new()
    } else {
        format!("  ({})", f.note)
    };
    format!("{:<58} {:>14}   {target}{note}", f.name, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked_in_their_direction_and_printed_with_units() {
        let mut r = Report::default();
        r.target("s", "p50", 1.5, "ms", Target::AtMost(2.0));
        r.target("s", "ratio", 40.0, "%", Target::AtLeast(50.0));
        r.add("s", "info", 3.0, "KB");
        assert_eq!(r.tally(), (1, 1));
        let j = r.json(json!({}));
        assert_eq!(j["figures"][0]["met"], json!(true));
        assert_eq!(j["figures"][1]["target"], json!("≥ 50 %"));
        assert_eq!(j["figures"][2]["met"], Value::Null);
        assert!(r.table().contains("✗ ≥ 50 %"));
    }
}
