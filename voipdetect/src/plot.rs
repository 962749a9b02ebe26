//! `voipdetect replay --plot OUT.svg`: packets per second of the busiest
//! conversations over time, each verdict marked where it was made: the
//! picture of a call starting. Plain SVG written directly (a line chart
//! needs no font or plotting engine).

use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;

/// One conversation's series.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    /// Packet times (ns, capture clock), both directions.
    pub times: Vec<u64>,
    /// When it was called, if it was.
    pub verdict_ns: Option<u64>,
}

const COLORS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const W: f64 = 1000.0;
const H: f64 = 520.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 170.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Renders `series` (the busiest first) as an SVG document.
pub fn svg(series: &[Series]) -> String {
    let t0 = series.iter().flat_map(|s| s.times.first()).min().copied().unwrap_or(0);
    let t1 = series.iter().flat_map(|s| s.times.last()).max().copied().unwrap_or(t0 + 1).max(t0 + 1);
    let span = (t1 - t0) as f64 / 1e9;
    // Bins: a tenth of a second for short captures, up to 300 points.
    let bin = (span / 300.0).max(0.1);
    let nbins = (span / bin).ceil() as usize + 1;
    let rates: Vec<Vec<f64>> = series
        .iter()
        .map(|s| {
            let mut b = vec![0.0; nbins];
            for &t in &s.times {
                let i = (((t - t0) as f64 / 1e9) / bin) as usize;
                if let Some(x) = b.get_mut(i) {
                    *x += 1.0 / bin;
                }
            }
            b
        })
        .collect();
    let ymax = rates.iter().flatten().copied().fold(1.0, f64::max) * 1.1;
    let x = |secs: f64| LEFT + (W - LEFT - RIGHT) * secs / span.max(1e-9);
    let y = |pps: f64| TOP + (H - TOP - BOTTOM) * (1.0 - pps / ymax);
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    let _ = write!(
        o,
        r#"<text x="{LEFT}" y="18" font-size="14">packets per second (both directions), busiest conversations; ▲ verdict</text>"#
    );
    // Axes and ticks.
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    let _ = write!(o, r#"<path d="M{x0},{y0} L{x0},{y1} L{x1},{y1}" stroke="black" fill="none"/>"#);
    for i in 0..=5 {
        let v = ymax / 1.1 * f64::from(i) / 5.0;
        let _ = write!(o, r#"<text x="{}" y="{}" text-anchor="end">{v:.0}</text>"#, x0 - 6.0, y(v) + 4.0);
        let _ = write!(o, r##"<line x1="{x0}" x2="{x1}" y1="{0}" y2="{0}" stroke="#eee"/>"##, y(v));
        let t = span * f64::from(i) / 5.0;
        let _ = write!(o, r#"<text x="{}" y="{}" text-anchor="middle">{t:.1} s</text>"#, x(t), y1 + 16.0);
    }
    for (i, (s, r)) in series.iter().zip(&rates).enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts: Vec<String> = r.iter().enumerate().map(|(k, v)| format!("{:.1},{:.1}", x(k as f64 * bin), y(*v))).collect();
        let _ = write!(o, r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="1.5"/>"#, pts.join(" "));
        if let Some(v) = s.verdict_ns {
            let vx = x((v.saturating_sub(t0)) as f64 / 1e9);
            let _ = write!(o, r#"<line x1="{vx:.1}" x2="{vx:.1}" y1="{y0}" y2="{y1}" stroke="{c}" stroke-dasharray="4 3"/>"#);
            let _ = write!(o, r#"<text x="{vx:.1}" y="{}" fill="{c}" text-anchor="middle">▲</text>"#, y1 + 4.0);
        }
        let ly = y1 + 40.0 + 15.0 * i as f64;
        let _ = write!(o, r#"<rect x="{x0}" y="{}" width="12" height="3" fill="{c}"/>"#, ly - 4.0);
        let _ = write!(o, r#"<text x="{}" y="{ly}">{}</text>"#, x0 + 18.0, esc(&s.label));
    }
    o.push_str("</svg>\n");
    o
}

/// Writes the busiest eight of `series` to `path`.
pub fn write_svg(path: &Path, series: &[Series]) -> anyhow::Result<()> {
    let mut s: Vec<Series> = series.to_vec();
    s.sort_by_key(|x| std::cmp::Reverse(x.times.len()));
    s.truncate(COLORS.len());
    std::fs::write(path, svg(&s)).with_context(|| format!("writing {}", path.display()))
}
