//! `--sweep R1,R2,...`: the same workload once per open-loop rate, then a
//! latency-vs-throughput table and an SVG plot (hand-written SVG: achieved
//! throughput on x, latency on a log y axis, one line each for p50, p99 and
//! p99.9, and the target rate of every point marked on the x axis).
//!
//! Each point is an ordinary open-loop run (`--rate R`), so its latencies
//! count from the due times (coordinated omission corrected): past the
//! server's capacity the achieved throughput flattens and the tail climbs,
//! which is the knee the plot is for.

use std::fmt::Write as _;

use crate::args::Args;
use crate::report::Report;
use crate::run::{self, RunError};

/// One point of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub target_rps: f64,
    pub achieved_rps: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub errors: u64,
}

impl Point {
    pub fn of(target: f64, r: &Report) -> Point {
        Point {
            target_rps: target,
            achieved_rps: r.rps(),
            p50_us: r.percentile_us(50.0),
            p99_us: r.percentile_us(99.0),
            p999_us: r.percentile_us(99.9),
            errors: r.rec.error_count(),
        }
    }
}

/// Runs `args` once per rate of `--sweep`, calling `each` after every run.
pub fn sweep(args: &Args, mut each: impl FnMut(&Report)) -> Result<Vec<Point>, RunError> {
    let mut points = Vec::new();
    for &rate in &args.global.sweep {
        let mut a = args.clone();
        a.global.rate = Some(rate);
        a.global.sweep.clear();
        let r = run::run(&a)?;
        each(&r);
        points.push(Point::of(rate, &r));
    }
    Ok(points)
}

/// The table printed after a sweep.
pub fn table(cmd: &str, points: &[Point]) -> String {
    let mut s = format!("\nLatency vs throughput ({cmd}, open loop):\n");
    let _ = writeln!(
        s,
        "  {:>12} {:>12} {:>10} {:>10} {:>10} {:>7}",
        "target/s", "achieved/s", "p50 ms", "p99 ms", "p99.9 ms", "errors"
    );
    for p in points {
        let _ = writeln!(
            s,
            "  {:>12.0} {:>12.0} {:>10.3} {:>10.3} {:>10.3} {:>7}",
            p.target_rps,
            p.achieved_rps,
            p.p50_us as f64 / 1e3,
            p.p99_us as f64 / 1e3,
            p.p999_us as f64 / 1e3,
            p.errors
        );
    }
    s
}

const W: f64 = 720.0;
const H: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Chart geometry: data to pixel coordinates.
struct Axes {
    x_max: f64,
    /// log10 of the y range, in ms.
    ly_min: f64,
    ly_max: f64,
}

impl Axes {
    fn new(lines: &[Line], targets: &[f64]) -> Axes {
        let x_max = lines
            .iter()
            .flat_map(|l| l.xy.iter().map(|&(x, _)| x))
            .chain(targets.iter().copied())
            .filter(|x| x.is_finite())
            .fold(1.0, f64::max);
        let lats = lines
            .iter()
            .flat_map(|l| l.xy.iter().map(|&(_, us)| (us.max(1) as f64) / 1e3));
        let (lo, hi) = lats.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (lo, hi) = if lo > hi { (0.1, 10.0) } else { (lo, hi) };
        // Whole decades around the data.
        let ly_min = lo.log10().floor();
        let ly_max = hi.log10().ceil().max(ly_min + 1.0);
        Axes {
            x_max: nice_ceil(x_max),
            ly_min,
            ly_max,
        }
    }
    fn x(&self, rps: f64) -> f64 {
        let f = if rps.is_finite() {
            rps / self.x_max
        } else {
            0.0
        };
        LEFT + (W - LEFT - RIGHT) * f.clamp(0.0, 1.0)
    }
    fn y(&self, us: u64) -> f64 {
        let ly = ((us.max(1) as f64) / 1e3).log10();
        let f = ((ly - self.ly_min) / (self.ly_max - self.ly_min)).clamp(0.0, 1.0);
        H - BOTTOM - (H - TOP - BOTTOM) * f
    }
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v`.
pub fn nice_ceil(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v * (1.0 - 1e-12) {
            return m * p;
        }
    }
    10.0 * p
}

/// One line of a plot: (achieved requests/s, latency µs) per point.
pub struct Line {
    pub label: String,
    pub color: &'static str,
    pub dashed: bool,
    pub xy: Vec<(f64, u64)>,
}

/// The plot of one sweep, a standalone SVG document: p50, p99, p99.9.
pub fn svg(title: &str, points: &[Point]) -> String {
    type Pct = (&'static str, &'static str, fn(&Point) -> u64);
    let pcts: [Pct; 3] = [
        ("p50", "#1f77b4", |p| p.p50_us),
        ("p99", "#ff7f0e", |p| p.p99_us),
        ("p99.9", "#d62728", |p| p.p999_us),
    ];
    let lines: Vec<Line> = pcts
        .iter()
        .map(|(label, color, f)| Line {
            label: label.to_string(),
            color,
            dashed: false,
            xy: points.iter().map(|p| (p.achieved_rps, f(p))).collect(),
        })
        .collect();
    let targets: Vec<f64> = points.iter().map(|p| p.target_rps).collect();
    plot(title, &lines, &targets)
}

/// Several sweeps on one plot (e.g. etcd and ferrocd): p50 dashed, p99
/// solid, one color per sweep.
pub fn svg_compare(title: &str, sweeps: &[(String, Vec<Point>)]) -> String {
    const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let mut lines = Vec::new();
    let mut targets = Vec::new();
    for (i, (name, points)) in sweeps.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        lines.push(Line {
            label: format!("{name} p50"),
            color,
            dashed: true,
            xy: points.iter().map(|p| (p.achieved_rps, p.p50_us)).collect(),
        });
        lines.push(Line {
            label: format!("{name} p99"),
            color,
            dashed: false,
            xy: points.iter().map(|p| (p.achieved_rps, p.p99_us)).collect(),
        });
        targets.extend(points.iter().map(|p| p.target_rps));
    }
    plot(title, &lines, &targets)
}

/// Draws `lines` (log y) with the target rates marked on the x axis.
pub fn plot(title: &str, lines: &[Line], targets: &[f64]) -> String {
    let ax = Axes::new(lines, targets);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="13">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    // Axes.
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    let _ = writeln!(
        s,
        r#"<path d="M{x0},{y1} L{x0},{y0} L{x1},{y0}" stroke="black" fill="none"/>"#
    );
    // x ticks: 5 steps.
    for i in 0..=5 {
        let v = ax.x_max * i as f64 / 5.0;
        let x = ax.x(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{v:.0}</text>"##,
            y0 + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">achieved throughput (requests/s)</text>"#,
        (x0 + x1) / 2.0,
        H - 18.0
    );
    // y ticks: every decade.
    let mut d = ax.ly_min;
    while d <= ax.ly_max + 1e-9 {
        let ms = 10f64.powf(d);
        let y = ax.y((ms * 1e3).round() as u64);
        let label = format!("{:.*}", (-d).max(0.0) as usize, ms);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            x0 - 6.0,
            y + 4.0
        );
        d += 1.0;
    }
    let _ = writeln!(
        s,
        r#"<text transform="translate(22,{:.1}) rotate(-90)" text-anchor="middle">latency (ms, log scale, from due time)</text>"#,
        (y0 + y1) / 2.0
    );
    // Target rates: small ticks under the x axis.
    for &t in targets {
        let x = ax.x(t);
        let _ = writeln!(
            s,
            r##"<line class="target" x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{:.1}" stroke="#888"/>"##,
            y0 - 6.0
        );
    }
    for (k, l) in lines.iter().enumerate() {
        let color = l.color;
        let dash = if l.dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let pts: Vec<(f64, f64)> = l.xy.iter().map(|&(x, us)| (ax.x(x), ax.y(us))).collect();
        let coords: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            s,
            r#"<polyline class="{}" points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            esc(&l.label.replace(' ', "-")),
            coords.join(" ")
        );
        for (cx, cy) in &pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3" fill="{color}"/>"#
            );
        }
        let ly = TOP + 10.0 + 20.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            x1 + 12.0,
            x1 + 37.0,
            x1 + 44.0,
            ly + 4.0,
            esc(&l.label)
        );
    }
    let ly = TOP + 10.0 + 20.0 * lines.len() as f64;
    let _ = writeln!(
        s,
        r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#888"/><text x="{:.1}" y="{:.1}">target rate</text>"##,
        x1 + 24.0,
        ly - 6.0,
        x1 + 24.0,
        ly + 6.0,
        x1 + 44.0,
        ly + 4.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(target: f64, achieved: f64, p50: u64, p99: u64, p999: u64) -> Point {
        Point {
            target_rps: target,
            achieved_rps: achieved,
            p50_us: p50,
            p99_us: p99,
            p999_us: p999,
            errors: 0,
        }
    }

    /// The coordinates of one polyline, by class.
    fn polyline(svg: &str, class: &str) -> Vec<(f64, f64)> {
        let tag = format!(r#"<polyline class="{class}" points=""#);
        let start = svg.find(&tag).expect("polyline") + tag.len();
        let end = start + svg[start..].find('"').unwrap();
        svg[start..end]
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn nice_ceil_rounds_up_to_1_2_5() {
        assert_eq!(nice_ceil(1.0), 1.0);
        assert_eq!(nice_ceil(1.2), 2.0);
        assert_eq!(nice_ceil(4321.0), 5000.0);
        assert_eq!(nice_ceil(5000.0), 5000.0);
        assert_eq!(nice_ceil(7000.0), 10000.0);
        assert_eq!(nice_ceil(0.0), 1.0);
    }

    #[test]
    fn svg_plots_every_point_inside_the_chart_in_order() {
        let points = vec![
            pt(1000.0, 1000.0, 300, 900, 2000),
            pt(5000.0, 4990.0, 400, 2_000, 9_000),
            pt(20000.0, 12000.0, 50_000, 400_000, 800_000),
        ];
        let s = svg("put <1 member> & co", &points);
        assert!(s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(s.trim_end().ends_with("</svg>"));
        assert!(s.contains("put &lt;1 member&gt; &amp; co"), "title escaped");
        assert_eq!(s.matches("class=\"target\"").count(), 3);
        for class in ["p50", "p99", "p99.9"] {
            let xy = polyline(&s, class);
            assert_eq!(xy.len(), 3, "{class}");
            for &(x, y) in &xy {
                assert!((LEFT..=W - RIGHT).contains(&x), "{class} x {x}");
                assert!((TOP..=H - BOTTOM).contains(&y), "{class} y {y}");
            }
            // More throughput is further right; more latency is higher up
            // (smaller y).
            assert!(xy[0].0 < xy[1].0 && xy[1].0 < xy[2].0, "{class}: {xy:?}");
            assert!(xy[0].1 > xy[2].1, "{class}: {xy:?}");
        }
        // At the same throughput, p99.9 is above p99, above p50.
        let (a, b, c) = (
            polyline(&s, "p50"),
            polyline(&s, "p99"),
            polyline(&s, "p99.9"),
        );
        for i in 0..3 {
            assert!(a[i].1 > b[i].1 && b[i].1 > c[i].1, "point {i}");
        }
        // Log scale: 0.3 ms .. 800 ms spans decades 0.1 .. 1000 ms.
        for label in [">0.1<", ">1<", ">10<", ">100<", ">1000<"] {
            assert!(s.contains(label), "y label {label}");
        }
        // Tags balance (a cheap well-formedness check).
        assert_eq!(s.matches("<svg").count(), s.matches("</svg>").count());
        assert_eq!(s.matches("<text").count(), s.matches("</text>").count());
    }

    #[test]
    fn empty_and_single_point_sweeps_still_draw() {
        let s = svg("nothing", &[]);
        assert!(s.contains("</svg>"));
        assert!(!s.contains("NaN") && !s.contains("inf"));
        let s = svg("one", &[pt(100.0, 0.0, 0, 0, 0)]);
        assert!(!s.contains("NaN") && !s.contains("inf"), "{s}");
        assert_eq!(polyline(&s, "p99").len(), 1);
    }

    #[test]
    fn table_lists_each_point() {
        let t = table("put", &[pt(1000.0, 998.4, 1500, 3000, 4000)]);
        assert!(t.contains("open loop"));
        assert!(
            t.contains("1000") && t.contains("998") && t.contains("1.500"),
            "{t}"
        );
    }

    #[test]
    fn compare_plot_has_p50_and_p99_per_server() {
        let e = vec![
            pt(1000.0, 1000.0, 500, 5000, 9000),
            pt(4000.0, 3000.0, 9000, 90_000, 99_000),
        ];
        let f = vec![
            pt(1000.0, 1000.0, 300, 900, 1000),
            pt(4000.0, 4000.0, 400, 2000, 3000),
        ];
        let s = svg_compare("put", &[("etcd".into(), e), ("ferrocd".into(), f)]);
        for class in ["etcd-p50", "etcd-p99", "ferrocd-p50", "ferrocd-p99"] {
            assert_eq!(polyline(&s, class).len(), 2, "{class}");
        }
        assert_eq!(
            s.matches("stroke-dasharray").count(),
            4,
            "p50 lines and their legend"
        );
        // ferrocd's p99 at 4000/s sits lower (faster) than etcd's at 3000/s.
        assert!(polyline(&s, "ferrocd-p99")[1].1 > polyline(&s, "etcd-p99")[1].1);
        assert_eq!(s.matches("class=\"target\"").count(), 4);
    }
}
