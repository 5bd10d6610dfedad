//! Aligned text tables for human output.

use crate::output;

/// Prints `rows` under `header`, each column as wide as its widest cell.
/// Nothing at all when there are no rows: a header alone reads like a
/// result.
pub fn print(header: &[&str], rows: &[Vec<String>]) {
    if !rows.is_empty() {
        output::block(&render(header, rows));
    }
}

/// Cells are shown with [`output::shown`] (quoted with escapes when they
/// need any, `""` for empty), so a row is always one line. Widths count characters: exact for the ASCII ids
/// that are the rule, a little off for double-width scripts.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| output::shown(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                l.push_str(cell);
            } else {
                l.push_str(cell);
                let pad = w.saturating_sub(cell.chars().count()) + 2;
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align() {
        let out = super::render(
            &["A", "BB"],
            &[
                vec!["long cell".into(), "x".into()],
                vec!["s".into(), "yy".into()],
            ],
        );
        assert_eq!(out, "A          BB\nlong cell  x\ns          yy\n");
    }

    #[test]
    fn hostile_cells_stay_on_one_line() {
        let out = super::render(
            &["ID", "APP"],
            &[
                vec!["a\nb".into(), "\u{1b}[2J".into()],
                vec![String::new(), "é".into()],
            ],
        );
        assert_eq!(out, "ID      APP\n\"a\\nb\"  \"\\x1b[2J\"\n\"\"      é\n");
    }
}
