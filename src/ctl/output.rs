//! How the CLI prints: `json` (the hub's answer as it came, pretty) or
//! `table` (chosen columns, aligned).

use serde_json::Value;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// A cell: text as it is, `-` for nothing, lists joined by commas.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Rows under headers, each column as wide as its widest cell; a column
/// reads its JSON pointer in each row.
pub fn table(rows: &[Value], columns: &[(&str, &str)]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|(_, pointer)| cell(row.pointer(pointer).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(index, (header, _))| {
            cells
                .iter()
                .map(|row| row[index].chars().count())
                .chain([header.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |texts: Vec<String>| {
        texts
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(columns.iter().map(|(h, _)| (*h).to_owned()).collect());
    for row in cells {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

/// Key-value lines for one object (the keys given, in order).
pub fn fields(value: &Value, keys: &[(&str, &str)]) -> String {
    let width = keys.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    keys.iter()
        .map(|(label, pointer)| {
            format!(
                "{label:<width$}  {}",
                cell(value.pointer(pointer).unwrap_or(&Value::Null))
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints an answer: `json` whole, else `render`'s text.
pub fn print(output: Output, value: &Value, render: impl FnOnce(&Value) -> String) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        Output::Table => println!("{}", render(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_aligns_its_columns() {
        let rows = vec![
            json!({"name": "loot", "env": "staging", "tags": ["a", "b"]}),
            json!({"name": "weapon-balance", "env": null, "tags": []}),
        ];
        assert_eq!(
            table(
                &rows,
                &[("NAME", "/name"), ("ENV", "/env"), ("TAGS", "/tags")]
            ),
            "NAME            ENV      TAGS\nloot            staging  a,b\nweapon-balance  -        -"
        );
        assert_eq!(
            fields(&rows[0], &[("name", "/name"), ("environment", "/env")]),
            "name         loot\nenvironment  staging"
        );
    }
}
