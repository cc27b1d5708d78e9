//! Plain-text tables for humans.

use serde_json::Value;

/// Print `rows` under `headers`, each column as wide as its widest cell.
pub fn print(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
    if rows.is_empty() {
        println!("(none)");
    }
}

/// A JSON value as a short cell: strings bare, null as "-".
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "all".into(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Key: value lines for one object.
pub fn print_object(v: &Value) {
    if let Some(map) = v.as_object() {
        let width = map.keys().map(|k| k.len()).max().unwrap_or(0);
        for (k, val) in map {
            let shown = match val {
                Value::Object(_) => val.to_string(),
                other => cell(other),
            };
            println!("{k:<width$}  {shown}");
        }
    } else {
        println!("{}", cell(v));
    }
}
