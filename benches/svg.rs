//! Hand-written SVG line charts: a grid of small panels, each with axes, a dashed
//! "delivered = offered" diagonal and one polyline per series. No dependencies; the
//! output is plain text any browser renders.

use std::fmt::Write as _;

/// One line on a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// A CSS colour (`#1f77b4`).
    pub color: String,
    /// `(x, y)` points, drawn in the given order. An empty series is listed in the
    /// legend as "not measured" and draws no line.
    pub points: Vec<(f64, f64)>,
}

/// One panel of the grid.
#[derive(Debug, Clone)]
pub struct Chart {
    /// The panel's title (the scenario).
    pub title: String,
    /// Its lines.
    pub series: Vec<Series>,
}

const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 260.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 62.0;

/// Escapes text for use inside an SVG element or attribute.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A packet rate as `850k` or `1.2M`.
pub fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Renders `charts` as one SVG document, `cols` panels per row, every panel with its
/// own axes scaled to its data (both axes from 0, equal scale, so the diagonal is the
/// lossless line), labelled `x_label` and `y_label`.
pub fn render(charts: &[Chart], cols: usize, title: &str, x_label: &str, y_label: &str) -> String {
    let cols = cols.max(1);
    let rows = charts.len().div_ceil(cols).max(1);
    let head = 30.0;
    let width = PANEL_W * cols as f64;
    let height = head + PANEL_H * rows as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
        width / 2.0,
        esc(title)
    );
    for (i, chart) in charts.iter().enumerate() {
        let ox = PANEL_W * (i % cols) as f64;
        let oy = head + PANEL_H * (i / cols) as f64;
        panel(&mut s, chart, ox, oy, x_label, y_label);
    }
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, chart: &Chart, ox: f64, oy: f64, x_label: &str, y_label: &str) {
    let max = chart
        .series
        .iter()
        .flat_map(|se| se.points.iter())
        .map(|&(x, y)| x.max(y))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let max = if max > 0.0 { max * 1.05 } else { 1.0 };
    let (x0, y0) = (ox + LEFT, oy + PANEL_H - BOTTOM);
    let (w, h) = (PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM);
    let px = |v: f64| x0 + (v / max).clamp(0.0, 1.0) * w;
    let py = |v: f64| y0 - (v / max).clamp(0.0, 1.0) * h;
    let _ = writeln!(s, "<g>");
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
        x0 + w / 2.0,
        oy + TOP - 10.0,
        esc(&chart.title)
    );
    // Axes and ticks.
    let _ = writeln!(
        s,
        r#"<path d="M{x0:.1},{:.1} V{y0:.1} H{:.1}" stroke="black" fill="none"/>"#,
        y0 - h,
        x0 + w
    );
    for k in 0..=4 {
        let v = max * f64::from(k) / 4.0;
        let (tx, ty) = (px(v), py(v));
        let _ = writeln!(
            s,
            r##"<path d="M{tx:.1},{y0:.1} v4 M{x0:.1},{ty:.1} h-4 M{:.1},{ty:.1} H{:.1}" stroke="#bbb" fill="none"/>"##,
            x0 + 1.0,
            x0 + w
        );
        let _ = writeln!(
            s,
            r#"<text x="{tx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            y0 + 15.0,
            si(v)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            x0 - 6.0,
            ty + 4.0,
            si(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        x0 + w / 2.0,
        y0 + 30.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{}</text>"#,
        ox + 12.0,
        y0 - h / 2.0,
        ox + 12.0,
        y0 - h / 2.0,
        esc(y_label)
    );
    // The lossless diagonal.
    let _ = writeln!(
        s,
        r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="4 3"/>"##,
        px(0.0),
        py(0.0),
        px(max),
        py(max)
    );
    let mut legend_x = x0;
    for se in &chart.series {
        let color = esc(&se.color);
        if !se.points.is_empty() {
            let pts: Vec<String> = se
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                pts.join(" ")
            );
            for &(x, y) in &se.points {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#,
                    px(x),
                    py(y)
                );
            }
        }
        let label = if se.points.is_empty() {
            format!("{}: not measured", se.name)
        } else {
            se.name.clone()
        };
        let _ = writeln!(
            s,
            r#"<rect x="{legend_x:.1}" y="{:.1}" width="10" height="10" fill="{color}"/>"#,
            y0 + 40.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            legend_x + 14.0,
            y0 + 49.0,
            esc(&label)
        );
        legend_x += 30.0 + 6.5 * label.len() as f64;
    }
    let _ = writeln!(s, "</g>");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that every element opened is closed in order (self-closing ones count as
    /// both), without a parser: enough to catch a writer that forgets a `</g>`.
    fn balanced(svg: &str) -> bool {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>') else {
                return false;
            };
            let tag = &rest[open + 1..open + close];
            rest = &rest[open + close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop() != Some(name.trim()) {
                    return false;
                }
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap_or("");
                stack.push(name);
            }
        }
        stack.is_empty()
    }

    fn sample() -> Vec<Chart> {
        let bare = Series {
            name: "bare".into(),
            color: "#1f77b4".into(),
            points: vec![(1e5, 1e5), (2e5, 2e5), (3e5, 2.5e5)],
        };
        let relay = Series {
            name: "relay <x>".into(),
            color: "#ff7f0e".into(),
            points: vec![],
        };
        vec![
            Chart {
                title: "fan-out 1, 200 B".into(),
                series: vec![bare.clone(), relay.clone()],
            },
            Chart {
                title: "fan-out 4 & 1200 B".into(),
                series: vec![bare, relay],
            },
            Chart {
                title: "empty".into(),
                series: vec![],
            },
        ]
    }

    #[test]
    fn svg_is_well_formed() {
        let svg = render(&sample(), 2, "relay vs bare", "offered", "delivered");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<polyline").count(),
            2,
            "one per measured series"
        );
        assert_eq!(svg.matches("<g>").count(), 3);
        assert!(svg.contains("relay &lt;x&gt;: not measured"));
        assert!(svg.contains("fan-out 4 &amp; 1200 B"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(balanced(&svg), "unbalanced tags:\n{svg}");
    }

    #[test]
    fn balance_checker_catches_a_missing_close() {
        assert!(balanced("<svg><g><rect/></g></svg>"));
        assert!(!balanced("<svg><g><rect/></svg>"));
        assert!(!balanced("<svg><g></svg></g>"));
    }

    #[test]
    fn no_data_still_renders() {
        let svg = render(&[], 3, "t", "x", "y");
        assert!(balanced(&svg));
        assert!(svg.starts_with("<svg"));
    }

    #[test]
    fn si_units() {
        assert_eq!(si(850_000.0), "850k");
        assert_eq!(si(1_234_000.0), "1.23M");
        assert_eq!(si(12.0), "12");
    }
}
