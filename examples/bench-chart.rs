//! `bench-chart`: draws a chart of one table of a `docs/benchmarks.md` section as SVG, so that
//! the benchmark scripts (`scripts/bench/*.sh`) draw their charts from the very table they
//! just wrote. Standard library only; no network, no fonts beyond the viewer's sans-serif.
//!
//! ```text
//! bench-chart bars    DOC SECTION TABLE LABEL_COLS VALUE_COLS TITLE OUT.svg
//! bench-chart scatter DOC SECTION TABLE LABEL_COL X_COL Y_COL TITLE OUT.svg
//! ```
//!
//! `TABLE` counts the section's markdown tables from 1; columns are named by their header
//! text, several joined with `,` (`"engine,weights"`). `bars` draws one horizontal bar per row
//! and value column (grouped by row; rows whose cell is not a number get no bar); `scatter`
//! one labelled point per row with numbers in both columns.

use std::fmt::Write as _;
use std::process::ExitCode;

/// Width of the scatter charts, in SVG units (pixels).
const WIDTH: f64 = 760.0;
/// Width of the bars' plot area; the row labels' room is added to its left.
const PLOT_WIDTH: f64 = 420.0;
/// Approximate width of one character of a 12-unit sans-serif label.
const CHAR_WIDTH: f64 = 6.6;
/// Height of one bar.
const BAR_HEIGHT: f64 = 14.0;
/// Space between two rows of bars.
const ROW_GAP: f64 = 8.0;
/// Above the plot: title and legend.
const TOP: f64 = 52.0;
/// Below the plot: the axis and its numbers.
const BOTTOM: f64 = 30.0;
/// Fill colours of the series, in order.
const COLOURS: [&str; 4] = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759"];

/// A markdown table: header cells and data rows.
#[derive(Debug, PartialEq)]
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// The index of each named column (`a,b`), or an error naming the header.
    fn columns(&self, names: &str) -> Result<Vec<usize>, String> {
        names
            .split(',')
            .map(|n| {
                self.header
                    .iter()
                    .position(|h| h == n.trim())
                    .ok_or_else(|| format!("no column `{n}` in | {} |", self.header.join(" | ")))
            })
            .collect()
    }

    /// The row's cells of `cols`, joined with `, `.
    fn label(&self, row: &[String], cols: &[usize]) -> String {
        let parts: Vec<&str> = cols
            .iter()
            .filter_map(|&c| row.get(c).map(String::as_str))
            .filter(|s| !s.is_empty())
            .collect();
        parts.join(", ")
    }
}

/// The text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`.
fn section<'a>(doc: &'a str, name: &str) -> Result<&'a str, String> {
    let start = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let from = doc
        .find(&start)
        .ok_or_else(|| format!("no section `{name}`"))?
        + start.len();
    let len = doc[from..]
        .find(&end)
        .ok_or_else(|| format!("section `{name}` is not closed"))?;
    Ok(&doc[from..from + len])
}

/// The markdown tables of `text`, in order.
fn tables(text: &str) -> Vec<Table> {
    let mut out = Vec::new();
    let mut lines: Vec<Vec<String>> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.trim();
        if line.starts_with('|') {
            let cells = line
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect();
            lines.push(cells);
            continue;
        }
        if lines.len() >= 2 {
            let header = lines.remove(0);
            // The `|---|---|` rule under the header.
            lines.retain(|r| {
                !r.iter()
                    .all(|c| !c.is_empty() && c.trim_matches(['-', ':']).is_empty())
            });
            out.push(Table {
                header,
                rows: std::mem::take(&mut lines),
            });
        }
        lines.clear();
    }
    out
}

/// A cell as a number: `1,234.5`, `90.00%`, `**12**`; `None` for `-`, text or an empty cell.
fn number(cell: &str) -> Option<f64> {
    let t: String = cell
        .chars()
        .filter(|c| !matches!(c, ',' | '%' | '*' | '`' | ' '))
        .collect();
    t.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Round axis steps: 1, 2 or 5 times a power of ten, about `ticks` of them up to `max`.
fn tick_step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(f64::MIN_POSITIVE);
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power)
}

/// A number as the axis and the bar ends print it.
fn short(x: f64) -> String {
    if x == 0.0 || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An axis number: as many decimals as the step between ticks needs.
fn tick_label(x: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{x:.decimals$}")
}

fn svg_open(width: f64, height: f64, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" font-size="15" font-weight="bold" text-anchor="middle">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    s
}

/// Grouped horizontal bars: one group per row with a number in some value column.
fn bars(table: &Table, labels: &str, values: &str, title: &str) -> Result<String, String> {
    let (label_cols, value_cols) = (table.columns(labels)?, table.columns(values)?);
    let rows: Vec<(String, Vec<Option<f64>>)> = table
        .rows
        .iter()
        .map(|r| {
            let v = value_cols
                .iter()
                .map(|&c| r.get(c).and_then(|s| number(s)))
                .collect();
            (table.label(r, &label_cols), v)
        })
        .filter(|(_, v): &(String, Vec<Option<f64>>)| v.iter().any(Option::is_some))
        .collect();
    if rows.is_empty() {
        return Err(format!("no numbers in the columns {values}"));
    }
    let max = rows
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    let step = tick_step(max, 5.0);
    let top = (max / step).ceil().max(1.0) * step;
    let longest = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let label_width = (longest as f64 * CHAR_WIDTH + 16.0).max(120.0);
    let plot = PLOT_WIDTH;
    let width = label_width + plot + 70.0;
    let group = BAR_HEIGHT * value_cols.len() as f64 + ROW_GAP;
    let height = TOP + group * rows.len() as f64 + BOTTOM;
    let mut s = svg_open(width, height, title);
    let names: Vec<&str> = values.split(',').map(str::trim).collect();
    for (i, name) in names.iter().enumerate() {
        let x = label_width + 150.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="30" width="12" height="12" fill="{}"/><text x="{}" y="40">{}</text>"#,
            COLOURS[i % COLOURS.len()],
            x + 16.0,
            escape(name)
        );
    }
    let bottom = height - BOTTOM;
    let mut t = 0.0;
    while t <= top + step / 2.0 {
        let x = label_width + plot * t / top;
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            bottom + 16.0,
            tick_label(t, step)
        );
        t += step;
    }
    for (r, (label, vals)) in rows.iter().enumerate() {
        let y0 = TOP + group * r as f64 + ROW_GAP / 2.0;
        let mid = y0 + BAR_HEIGHT * vals.len() as f64 / 2.0 + 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{mid:.1}" text-anchor="end">{}</text>"#,
            label_width - 8.0,
            escape(label)
        );
        for (i, v) in vals.iter().enumerate() {
            let Some(v) = v else { continue };
            let (y, w) = (y0 + BAR_HEIGHT * i as f64, plot * v / top);
            let _ = writeln!(
                s,
                r#"<rect class="bar" x="{label_width}" y="{y:.1}" width="{w:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
                BAR_HEIGHT - 2.0,
                COLOURS[i % COLOURS.len()],
                label_width + w + 4.0,
                y + BAR_HEIGHT - 4.0,
                short(*v)
            );
        }
    }
    s.push_str("</svg>\n");
    Ok(s)
}

/// One labelled point per row with numbers in both columns; both axes from 0.
fn scatter(table: &Table, label: &str, x: &str, y: &str, title: &str) -> Result<String, String> {
    let (l, xc, yc) = (
        table.columns(label)?,
        table.columns(x)?[0],
        table.columns(y)?[0],
    );
    // Each point is labelled with its row's label and its y cell as the table prints it.
    let points: Vec<(String, f64, f64)> = table
        .rows
        .iter()
        .filter_map(|r| {
            let px = number(r.get(xc)?)?;
            let py = number(r.get(yc)?)?;
            Some((format!("{} ({})", table.label(r, &l), r[yc]), px, py))
        })
        .collect();
    if points.is_empty() {
        return Err(format!("no rows with numbers in `{x}` and `{y}`"));
    }
    let height = 420.0;
    let (left, right, bottom) = (70.0, WIDTH - 40.0, height - 50.0);
    let max = |f: fn(&(String, f64, f64)) -> f64| points.iter().map(f).fold(0.0f64, f64::max);
    let (sx, sy) = (tick_step(max(|p| p.1), 6.0), tick_step(max(|p| p.2), 5.0));
    let (tx, ty) = (
        (max(|p| p.1) / sx).ceil().max(1.0) * sx,
        (max(|p| p.2) / sy).ceil().max(1.0) * sy,
    );
    let px = |v: f64| left + (right - left) * v / tx;
    let py = |v: f64| bottom - (bottom - TOP) * v / ty;
    let mut s = svg_open(WIDTH, height, title);
    let mut t = 0.0;
    while t <= tx + sx / 2.0 {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{bottom}" stroke="#ddd"/><text x="{0:.1}" y="{1}" text-anchor="middle">{2}</text>"##,
            px(t),
            bottom + 16.0,
            tick_label(t, sx)
        );
        t += sx;
    }
    let mut t = 0.0;
    while t <= ty + sy / 2.0 {
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{0:.1}" x2="{right}" y2="{0:.1}" stroke="#ddd"/><text x="{1}" y="{2:.1}" text-anchor="end">{3}</text>"##,
            py(t),
            left - 6.0,
            py(t) + 4.0,
            tick_label(t, sy)
        );
        t += sy;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (left + right) / 2.0,
        height - 14.0,
        escape(x)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">{1}</text>"#,
        (TOP + bottom) / 2.0,
        escape(y)
    );
    for (label, vx, vy) in &points {
        let _ = writeln!(
            s,
            r#"<circle class="point" cx="{:.1}" cy="{:.1}" r="5" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            px(*vx),
            py(*vy),
            COLOURS[0],
            px(*vx) + 8.0,
            py(*vy) - 6.0,
            escape(label)
        );
    }
    s.push_str("</svg>\n");
    Ok(s)
}

/// The chart the arguments ask for, as SVG text.
fn chart(args: &[String], doc: &str) -> Result<String, String> {
    let [kind, _, name, index, a, b, c, rest @ ..] = args else {
        return Err(USAGE.into());
    };
    let all = tables(section(doc, name)?);
    let n: usize = index
        .parse()
        .map_err(|_| format!("`{index}`: not a table number"))?;
    let table = n
        .checked_sub(1)
        .and_then(|i| all.get(i))
        .ok_or_else(|| format!("section `{name}` has {} tables, not {n}", all.len()))?;
    match (kind.as_str(), rest) {
        ("bars", [_]) => bars(table, a, b, c),
        ("scatter", [title, _]) => scatter(table, a, b, c, title),
        _ => Err(USAGE.into()),
    }
}

const USAGE: &str =
    "usage: bench-chart bars DOC SECTION TABLE LABEL_COLS VALUE_COLS TITLE OUT.svg\n\
       bench-chart scatter DOC SECTION TABLE LABEL_COL X_COL Y_COL TITLE OUT.svg";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = || -> Result<String, String> {
        let doc_path = args.get(1).ok_or(USAGE)?;
        let out = args.last().ok_or(USAGE)?;
        let doc = std::fs::read_to_string(doc_path).map_err(|e| format!("{doc_path}: {e}"))?;
        let svg = chart(&args, &doc)?;
        std::fs::write(out, svg).map_err(|e| format!("{out}: {e}"))?;
        Ok(out.clone())
    };
    match run() {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-chart: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str =
        "intro\n<!-- bench:speed -->\nCaption.\n\n| k | v |\n|---|---|\n| a | 1 |\n\n\
| engine | weights | prefill tok/s | decode tok/s |\n|---|---|---:|---|\n\
| ours | f32 | 178.9 | 41.5 |\n| peer | Q4_0 | 1,834.3 | - |\n| ours, tokenizer | | 5.5 | 2 |\n\
<!-- /bench:speed -->\n<!-- bench:quant -->\n| model | perplexity | MiB |\n|---|---|---|\n\
| f32 | 15.007 | 1022 |\n| q4 | 18.020 | 212 |\n| broken | n/a | 5 |\n<!-- /bench:quant -->\n";

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tables_of_a_section() {
        let t = tables(section(DOC, "speed").unwrap());
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].rows, [["a", "1"]]);
        assert_eq!(t[1].header[2], "prefill tok/s");
        assert_eq!(t[1].rows.len(), 3);
        assert_eq!(number("1,834.3"), Some(1834.3));
        assert_eq!(number("90.00%"), Some(90.0));
        assert_eq!(number("-"), None);
        assert!(section(DOC, "nope").is_err());
    }

    #[test]
    fn one_bar_per_number_and_one_point_per_row() {
        let a = args(&[
            "bars",
            "doc",
            "speed",
            "2",
            "engine,weights",
            "prefill tok/s,decode tok/s",
            "Speed",
            "out.svg",
        ]);
        let svg = chart(&a, DOC).unwrap();
        // 3 rows x 2 series, less the `-` cell.
        assert_eq!(svg.matches(r#"class="bar""#).count(), 5);
        assert!(svg.contains(">ours, f32<") && svg.contains(">ours, tokenizer<"));
        assert!(svg.contains(">1834<"), "the peer's prefill is printed");
        let widths: Vec<f64> = svg
            .match_indices(r#"class="bar""#)
            .map(|(i, _)| {
                let w = &svg[i..].split("width=\"").nth(1).unwrap();
                w[..w.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert!(
            widths[2] > 10.0 * widths[0],
            "bars scale with the values: {widths:?}"
        );
        // Row labels get the room the longest needs.
        assert!(svg.contains(r#"class="bar" x="120""#), "{svg}");

        let a = args(&[
            "scatter",
            "doc",
            "quant",
            "1",
            "model",
            "MiB",
            "perplexity",
            "Quality",
            "out.svg",
        ]);
        let svg = chart(&a, DOC).unwrap();
        assert_eq!(
            svg.matches(r#"class="point""#).count(),
            2,
            "the n/a row has no point"
        );
        assert!(svg.contains(">q4 (18.020)<"));

        let bad = args(&["bars", "doc", "speed", "2", "engine", "nope", "T", "o.svg"]);
        assert!(chart(&bad, DOC).unwrap_err().contains("no column `nope`"));
        let bad = args(&["bars", "doc", "speed", "3", "engine", "v", "T", "o.svg"]);
        assert!(chart(&bad, DOC).unwrap_err().contains("has 2 tables"));
    }
}
