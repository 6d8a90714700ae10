//! Charts as plain SVG text: line charts and grouped bar charts, written by hand so that a
//! report is one self-contained file (no script, no font, no image fetched from anywhere).
//!
//! Every series differs from its neighbours in three ways at once — colour (the Okabe–Ito
//! palette, distinguishable with the common colour-vision deficiencies), dash pattern and
//! marker shape (bars: fill pattern) — so a chart still reads in grey scale or printed. Each
//! chart carries a `<title>` and an `aria-label`; the numbers behind it are always in a table
//! next to it as well.

use std::fmt::Write as _;

/// Okabe & Ito's colour-blind-safe palette (black last, for an eighth series).
const COLOURS: [&str; 8] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];
/// `stroke-dasharray` per series: solid, dashed, dotted, dash-dot, long dash, …
const DASHES: [&str; 8] = ["", "9 4", "2 3", "10 3 2 3", "16 4", "4 2 4 6", "1 2", "12 2 2 2 2 2"];
const MARKERS: [Marker; 8] = [
    Marker::Circle,
    Marker::Square,
    Marker::Triangle,
    Marker::Diamond,
    Marker::Cross,
    Marker::Plus,
    Marker::InvertedTriangle,
    Marker::Star,
];

#[derive(Clone, Copy)]
enum Marker {
    Circle,
    Square,
    Triangle,
    Diamond,
    Cross,
    Plus,
    InvertedTriangle,
    Star,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 48.0;

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(label: impl Into<String>, points: impl IntoIterator<Item = (f64, f64)>) -> Series {
        Series {
            label: label.into(),
            points: points.into_iter().filter(|(x, y)| x.is_finite() && y.is_finite()).collect(),
        }
    }
}

/// A reference line across the plot (an SLO, a ceiling), drawn thick, black and labelled.
#[derive(Clone, Debug)]
pub struct Rule {
    pub value: f64,
    pub label: String,
}

/// A line chart: x and y linear, or y logarithmic; x tick labels may be given.
#[derive(Clone, Debug, Default)]
pub struct LineChart {
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub y_log: bool,
    pub x_log: bool,
    /// Fixed x ticks (value, label); otherwise round numbers.
    pub x_ticks: Option<Vec<(f64, String)>>,
    /// Horizontal rules (y values) and vertical rules (x values).
    pub h_rules: Vec<Rule>,
    pub v_rules: Vec<Rule>,
}

/// A horizontal grouped bar chart: one group per category, one bar per series in it.
#[derive(Clone, Debug, Default)]
pub struct BarChart {
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub categories: Vec<String>,
    /// (series label, one value per category)
    pub series: Vec<(String, Vec<f64>)>,
}

/// Escapes text for SVG and HTML.
pub fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A number as a tick label: 1 500 → "1.5k", 0.25 → "0.25".
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e4 {
        let k = format!("{:.1}", v / 1e3);
        format!("{}k", k.strip_suffix(".0").unwrap_or(&k))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = if v.abs() >= 100.0 || v == v.trunc() { format!("{v:.0}") } else { format!("{v:.3}") };
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}

/// Round tick values covering `lo..=hi`, about `n` of them.
fn linear_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= n as f64).unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    (0..=n * 2 + 1).map(|i| first + i as f64 * step).take_while(|v| *v <= hi + step * 1e-6).collect()
}

struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    fn fit(values: impl Iterator<Item = f64>, log: bool, zero: bool) -> Axis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            (lo, hi) = if log { (0.1, 10.0) } else { (0.0, 1.0) };
        }
        if log {
            let lo = 10f64.powf(lo.log10().floor());
            let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
            Axis { lo, hi, log }
        } else {
            let lo = if zero { lo.min(0.0) } else { lo };
            let hi = if hi <= lo { lo + 1.0 } else { hi + (hi - lo) * 0.05 };
            Axis { lo, hi, log }
        }
    }

    /// Position of `v` in 0..=1.
    fn frac(&self, v: f64) -> f64 {
        if self.log {
            let v = v.max(self.lo);
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if !self.log {
            return linear_ticks(self.lo, self.hi, 6);
        }
        let decades = (self.hi.log10() - self.lo.log10()).round() as i32;
        let mults: &[f64] = if decades <= 2 { &[1.0, 2.0, 5.0] } else { &[1.0] };
        let mut out = Vec::new();
        for d in 0..=decades {
            for m in mults {
                let v = self.lo * 10f64.powi(d) * m;
                if v <= self.hi * 1.0001 {
                    out.push(v);
                }
            }
        }
        out
    }
}

fn marker(out: &mut String, m: Marker, x: f64, y: f64, colour: &str) {
    let r = 4.0;
    let _ = match m {
        Marker::Circle => write!(out, r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{colour}"/>"#),
        Marker::Square => write!(
            out,
            r#"<rect x="{:.1}" y="{:.1}" width="{}" height="{}" fill="{colour}"/>"#,
            x - r,
            y - r,
            2.0 * r,
            2.0 * r
        ),
        Marker::Triangle => write!(
            out,
            r#"<path d="M{x:.1},{:.1}L{:.1},{:.1}L{:.1},{:.1}Z" fill="{colour}"/>"#,
            y - r - 1.0,
            x + r,
            y + r,
            x - r,
            y + r
        ),
        Marker::InvertedTriangle => write!(
            out,
            r#"<path d="M{x:.1},{:.1}L{:.1},{:.1}L{:.1},{:.1}Z" fill="white" stroke="{colour}" stroke-width="2"/>"#,
            y + r + 1.0,
            x + r,
            y - r,
            x - r,
            y - r
        ),
        Marker::Diamond => write!(
            out,
            r#"<path d="M{x:.1},{:.1}L{:.1},{y:.1}L{x:.1},{:.1}L{:.1},{y:.1}Z" fill="white" stroke="{colour}" stroke-width="2"/>"#,
            y - r - 1.0,
            x + r + 1.0,
            y + r + 1.0,
            x - r - 1.0
        ),
        Marker::Cross => write!(
            out,
            r#"<path d="M{:.1},{:.1}L{:.1},{:.1}M{:.1},{:.1}L{:.1},{:.1}" stroke="{colour}" stroke-width="2.5"/>"#,
            x - r,
            y - r,
            x + r,
            y + r,
            x - r,
            y + r,
            x + r,
            y - r
        ),
        Marker::Plus => write!(
            out,
            r#"<path d="M{:.1},{y:.1}L{:.1},{y:.1}M{x:.1},{:.1}L{x:.1},{:.1}" stroke="{colour}" stroke-width="2.5"/>"#,
            x - r - 1.0,
            x + r + 1.0,
            y - r - 1.0,
            y + r + 1.0
        ),
        Marker::Star => write!(
            out,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="white" stroke="{colour}" stroke-width="2"/><circle cx="{x:.1}" cy="{y:.1}" r="1.5" fill="{colour}"/>"#
        ),
    };
}

fn open_svg(out: &mut String, id: &str, title: &str, height: f64) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{}" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" aria-label="{}" font-family="sans-serif" font-size="12"><title>{}</title><rect width="{WIDTH}" height="{height}" fill="white"/>"#,
        esc(id),
        esc(title),
        esc(title)
    );
    let _ = write!(
        out,
        r#"<text x="{}" y="20" font-size="15" font-weight="bold" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        esc(title)
    );
}

impl LineChart {
    /// The chart as an `<svg>` element.
    pub fn render(&self) -> String {
        let xs =
            self.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).chain(self.v_rules.iter().map(|r| r.value));
        let x = Axis::fit(xs.chain(self.x_ticks.iter().flatten().map(|t| t.0)), self.x_log, false);
        let ys =
            self.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).chain(self.h_rules.iter().map(|r| r.value));
        let y = Axis::fit(ys, self.y_log, true);
        // The legend sits under the plot, one row per two entries.
        let legend_rows = (self.series.len() + self.h_rules.len() + self.v_rules.len()).div_ceil(2);
        let height = HEIGHT + 12.0 + legend_rows as f64 * 20.0;
        let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let px = |v: f64| LEFT + x.frac(v) * pw;
        let py = |v: f64| TOP + (1.0 - y.frac(v)) * ph;
        let mut out = String::new();
        open_svg(&mut out, &self.id, &self.title, height);
        // Grid and ticks.
        out.push_str(r##"<g stroke="#ddd" stroke-width="1">"##);
        let y_ticks = y.ticks();
        for &t in &y_ticks {
            let _ = write!(out, r#"<line x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}"/>"#, LEFT + pw, py(t), py(t));
        }
        let x_ticks = self.x_ticks.clone().unwrap_or_else(|| x.ticks().into_iter().map(|t| (t, short(t))).collect());
        for (t, _) in &x_ticks {
            let _ = write!(out, r#"<line y1="{TOP}" y2="{}" x1="{:.1}" x2="{:.1}"/>"#, TOP + ph, px(*t), px(*t));
        }
        out.push_str("</g>");
        for &t in &y_ticks {
            let _ =
                write!(out, r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 6.0, py(t) + 4.0, short(t));
        }
        for (t, label) in &x_ticks {
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                px(*t),
                TOP + ph + 16.0,
                esc(label)
            );
        }
        let _ = write!(out, r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##);
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            TOP + ph + 34.0,
            esc(&self.x_label)
        );
        let _ = write!(
            out,
            r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        // Reference rules, under the data.
        for r in &self.h_rules {
            let _ = write!(
                out,
                r#"<line class="rule" x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="black" stroke-width="2.5" stroke-dasharray="14 4 3 4"/>"#,
                LEFT + pw,
                py(r.value),
                py(r.value)
            );
        }
        for r in &self.v_rules {
            let _ = write!(
                out,
                r##"<line class="rule" y1="{TOP}" y2="{}" x1="{:.1}" x2="{:.1}" stroke="#444" stroke-width="2.5" stroke-dasharray="3 3"/>"##,
                TOP + ph,
                px(r.value),
                px(r.value)
            );
        }
        // Series: the line, then at most about 14 markers on it.
        for (i, s) in self.series.iter().enumerate() {
            let (colour, dash, m) = (COLOURS[i % 8], DASHES[i % 8], MARKERS[i % 8]);
            if s.points.is_empty() {
                continue;
            }
            let d: Vec<String> = s.points.iter().map(|&(a, b)| format!("{:.1},{:.1}", px(a), py(b))).collect();
            let _ = write!(
                out,
                r#"<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}" points="{}"><title>{}</title></polyline>"#,
                d.join(" "),
                esc(&s.label)
            );
            let every = s.points.len().div_ceil(14).max(1);
            for (k, &(a, b)) in s.points.iter().enumerate() {
                if k % every == 0 || k + 1 == s.points.len() {
                    marker(&mut out, m, px(a), py(b), colour);
                }
            }
        }
        // Legend.
        let mut k = 0;
        let mut item = |out: &mut String, draw: &dyn Fn(&mut String, f64, f64), label: &str| {
            let (lx, ly) = (LEFT + (k % 2) as f64 * (pw / 2.0), HEIGHT + 12.0 + (k / 2) as f64 * 20.0);
            draw(out, lx, ly);
            let _ = write!(out, r#"<text x="{:.1}" y="{:.1}">{}</text>"#, lx + 40.0, ly + 4.0, esc(label));
            k += 1;
        };
        for (i, s) in self.series.iter().enumerate() {
            let (colour, dash, m) = (COLOURS[i % 8], DASHES[i % 8], MARKERS[i % 8]);
            item(
                &mut out,
                &|o: &mut String, lx, ly| {
                    let _ = write!(
                        o,
                        r#"<line x1="{lx:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>"#,
                        lx + 34.0
                    );
                    marker(o, m, lx + 17.0, ly, colour);
                },
                &s.label,
            );
        }
        for (r, dash, colour) in
            self.h_rules.iter().map(|r| (r, "14 4 3 4", "black")).chain(self.v_rules.iter().map(|r| (r, "3 3", "#444")))
        {
            item(
                &mut out,
                &|o: &mut String, lx, ly| {
                    let _ = write!(
                        o,
                        r#"<line x1="{lx:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2.5" stroke-dasharray="{dash}"/>"#,
                        lx + 34.0
                    );
                },
                &r.label,
            );
        }
        out.push_str("</svg>");
        out
    }
}

impl BarChart {
    /// The chart as an `<svg>` element.
    pub fn render(&self) -> String {
        let bars = self.series.len().max(1);
        let group_h = bars as f64 * 16.0 + 12.0;
        let ph = self.categories.len() as f64 * group_h;
        let left = 190.0;
        let pw = WIDTH - left - 90.0;
        let height = TOP + ph + BOTTOM + self.series.len().div_ceil(3) as f64 * 20.0;
        let x = Axis::fit(self.series.iter().flat_map(|s| s.1.iter().copied()).filter(|v| v.is_finite()), false, true);
        let px = |v: f64| left + x.frac(v) * pw;
        let mut out = String::new();
        open_svg(&mut out, &self.id, &self.title, height);
        // Fill patterns, so that bars differ without colour; ids are unique per chart.
        out.push_str("<defs>");
        for i in 0..self.series.len() {
            let (c, id) = (COLOURS[i % 8], format!("{}-p{i}", esc(&self.id)));
            let body = match i % 4 {
                0 => format!(r#"<rect width="8" height="8" fill="{c}"/>"#),
                1 => format!(
                    r#"<rect width="8" height="8" fill="white"/><path d="M0,8L8,0M-2,2L2,-2M6,10L10,6" stroke="{c}" stroke-width="2.5"/>"#
                ),
                2 => format!(r#"<rect width="8" height="8" fill="white"/><circle cx="4" cy="4" r="2.2" fill="{c}"/>"#),
                _ => format!(
                    r#"<rect width="8" height="8" fill="white"/><path d="M0,4L8,4M4,0L4,8" stroke="{c}" stroke-width="2"/>"#
                ),
            };
            let _ = write!(
                out,
                r#"<pattern id="{id}" width="8" height="8" patternUnits="userSpaceOnUse">{body}</pattern>"#
            );
        }
        out.push_str("</defs>");
        for t in x.ticks() {
            let _ = write!(
                out,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{TOP}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                px(t),
                px(t),
                TOP + ph,
                px(t),
                TOP + ph + 16.0,
                short(t)
            );
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            TOP + ph + 34.0,
            esc(&self.x_label)
        );
        for (c, cat) in self.categories.iter().enumerate() {
            let gy = TOP + c as f64 * group_h + 6.0;
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                left - 8.0,
                gy + group_h / 2.0,
                esc(cat)
            );
            for (i, (label, values)) in self.series.iter().enumerate() {
                let v = values.get(c).copied().unwrap_or(f64::NAN);
                let y = gy + i as f64 * 16.0;
                if !v.is_finite() {
                    // Unknown (an older report, a figure not measured): say so, draw nothing.
                    let _ = write!(
                        out,
                        r#"<text x="{:.1}" y="{:.1}">{}: no figure</text>"#,
                        left + 4.0,
                        y + 11.0,
                        esc(label)
                    );
                    continue;
                }
                let _ = write!(
                    out,
                    r#"<rect class="bar" x="{left}" y="{y:.1}" width="{:.1}" height="14" fill="url(#{}-p{i})" stroke="{}"><title>{}: {}</title></rect><text x="{:.1}" y="{:.1}">{}</text>"#,
                    (px(v) - left).max(0.5),
                    esc(&self.id),
                    COLOURS[i % 8],
                    esc(label),
                    short(v),
                    px(v) + 4.0,
                    y + 11.0,
                    short(v)
                );
            }
        }
        let _ = write!(out, r##"<line x1="{left}" x2="{left}" y1="{TOP}" y2="{:.1}" stroke="#333"/>"##, TOP + ph);
        for (i, (label, _)) in self.series.iter().enumerate() {
            let (lx, ly) = (left + (i % 3) as f64 * (pw / 3.0), TOP + ph + 52.0 + (i / 3) as f64 * 20.0);
            let _ = write!(
                out,
                r#"<rect x="{lx:.1}" y="{:.1}" width="28" height="12" fill="url(#{}-p{i})" stroke="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                ly - 9.0,
                esc(&self.id),
                COLOURS[i % 8],
                lx + 34.0,
                ly + 1.0,
                esc(label)
            );
        }
        out.push_str("</svg>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_differ_in_colour_dash_and_marker() {
        let chart = LineChart {
            id: "t".into(),
            title: "a <b>".into(),
            series: vec![Series::new("one", [(0.0, 1.0), (1.0, 2.0)]), Series::new("two", [(0.0, 3.0), (1.0, 4.0)])],
            h_rules: vec![Rule { value: 2.5, label: "SLO".into() }],
            ..Default::default()
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt;") && !svg.contains("a <b>"));
        assert_eq!(svg.matches(r#"class="series""#).count(), 2);
        assert!(svg.contains(COLOURS[0]) && svg.contains(COLOURS[1]));
        assert!(svg.contains(r#"stroke-dasharray="9 4""#), "the second series is dashed");
        assert!(svg.contains("<circle") && svg.contains("<rect x="), "circle and square markers");
        assert_eq!(svg.matches(r#"class="rule""#).count(), 1);
    }

    #[test]
    fn a_log_axis_has_decade_ticks_and_clamps_non_positive_values() {
        let a = Axis::fit([0.3, 0.0, 45.0].into_iter(), true, true);
        assert_eq!((a.lo, a.hi), (0.1, 100.0));
        assert_eq!(a.ticks(), vec![0.1, 1.0, 10.0, 100.0]);
        // Two decades or fewer get 1-2-5 ticks.
        let b = Axis::fit([0.3, 4.0].into_iter(), true, true);
        assert_eq!(b.ticks().len(), 7, "{:?}", b.ticks());
        assert!(a.frac(0.0) == 0.0 && (a.frac(100.0) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(linear_ticks(0.0, 10.5, 6), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(short(31_500.0), "31.5k");
        assert_eq!(short(40_983.0), "41k");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(2_000_000.0), "2M");
    }

    #[test]
    fn bars_have_patterns_unique_to_their_chart() {
        let chart = BarChart {
            id: "cmp".into(),
            title: "t".into(),
            categories: vec!["a".into(), "b".into()],
            series: vec![("otpd".into(), vec![1.0, 2.0]), ("hyper".into(), vec![3.0, 4.0])],
            ..Default::default()
        };
        let svg = chart.render();
        assert_eq!(svg.matches(r#"class="bar""#).count(), 4);
        assert!(svg.contains(r#"id="cmp-p1""#) && svg.contains("url(#cmp-p1)"));
    }
}
