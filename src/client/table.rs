//! Aligned columns for people to read; scripts use `--json` instead.

use serde_json::Value;

/// A table printed with each column as wide as its widest cell.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; it should have a cell for each header.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines of text, the last column left ragged so that no
    /// line ends in padding.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (column, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(column) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let headers: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            let mut line = String::new();
            for (column, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if column < last {
                    let width = widths.get(column).copied().unwrap_or(0);
                    let pad = width.saturating_sub(cell.chars().count()) + 2;
                    line.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A member of a JSON object as a cell: strings bare, `null` or absent as
/// `-`, anything else as compact JSON.
pub fn cell(value: &Value, name: &str) -> String {
    show(value.get(name).unwrap_or(&Value::Null))
}

/// A JSON value as a cell, as [`cell`] shows it.
pub fn show(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut table = Table::new(&["ID", "STATUS", "STEP"]);
        table.row(vec![
            "1".into(),
            "suspended".into(),
            "collect_payment".into(),
        ]);
        table.row(vec!["22".into(), "completed".into(), "-".into()]);
        assert_eq!(
            table.render(),
            "ID  STATUS     STEP\n\
             1   suspended  collect_payment\n\
             22  completed  -\n"
        );
    }

    #[test]
    fn cells_show_strings_bare_and_nothing_as_a_dash() {
        let row = json!({"a": "text", "b": null, "c": 3, "d": true});
        assert_eq!(cell(&row, "a"), "text");
        assert_eq!(cell(&row, "b"), "-");
        assert_eq!(cell(&row, "missing"), "-");
        assert_eq!(cell(&row, "c"), "3");
        assert_eq!(cell(&row, "d"), "true");
    }
}
