//! Pictures of a run, as SVG: the training curves and the confusion matrix.

use crate::{Confusion, EpochReport};
use std::fmt::Write;

const W: f64 = 900.0;

/// A named, coloured line of (epoch, value) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);
const H: f64 = 380.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// One line chart in the box (x0, y0, w, h) of `series` (name, colour, points by epoch).
#[allow(clippy::too_many_arguments)] // a box, a title, the lines and where the legend goes
fn chart(svg: &mut String, x0: f64, y0: f64, w: f64, h: f64, title: &str, series: &[Series], legend_low: bool) {
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .filter(|p| p.1.is_finite())
        .collect();
    if pts.is_empty() {
        return;
    }
    let (xmin, xmax) = (1.0f64, pts.iter().map(|p| p.0).fold(1.0, f64::max).max(2.0));
    let (mut ymin, mut ymax) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((ymax - ymin) * 0.08).max(1e-3);
    ymin -= pad;
    ymax += pad;
    let (l, r, t, b) = (x0 + 60.0, x0 + w - 10.0, y0 + 30.0, y0 + h - 40.0);
    let sx = |x: f64| l + (x - xmin) / (xmax - xmin) * (r - l);
    let sy = |y: f64| b - (y - ymin) / (ymax - ymin) * (b - t);
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" font-size="15" text-anchor="middle" font-weight="bold">{}</text>"#,
        (l + r) / 2.0,
        y0 + 18.0,
        esc(title)
    );
    let _ = write!(
        svg,
        r##"<rect x="{l}" y="{t}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        r - l,
        b - t
    );
    for i in 0..=4 {
        let y = ymin + (ymax - ymin) * i as f64 / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{l}" x2="{r}" y1="{0}" y2="{0}" stroke="#eee"/><text x="{1}" y="{2}" font-size="11" text-anchor="end">{y:.3}</text>"##,
            sy(y),
            l - 5.0,
            sy(y) + 4.0
        );
    }
    let step = ((xmax - xmin) / 10.0).ceil().max(1.0);
    let mut x = xmin;
    while x <= xmax + 1e-9 {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{x}</text>"#,
            sx(x),
            b + 15.0
        );
        x += step;
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">epoch</text>"#,
        (l + r) / 2.0,
        b + 32.0
    );
    for (i, (name, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for p in &path {
            let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(svg, r#"<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>"#);
        }
        let ly = if legend_low {
            b - 16.0 * (series.len() - i) as f64
        } else {
            t + 16.0 + 16.0 * i as f64
        };
        if i == 0 {
            let top = ly - 12.0;
            let _ = write!(
                svg,
                r#"<rect x="{}" y="{top}" width="118" height="{}" fill="white" fill-opacity="0.85"/>"#,
                r - 124.0,
                16.0 * series.len() as f64 + 4.0
            );
        }
        let _ = write!(
            svg,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            r - 120.0,
            r - 100.0,
            r - 95.0,
            ly + 4.0,
            esc(name)
        );
    }
}

/// Loss and accuracy against epoch, for training and validation.
pub fn curves_svg(epochs: &[EpochReport], title: &str) -> String {
    let pick = |f: &dyn Fn(&EpochReport) -> Option<f64>| -> Vec<(f64, f64)> {
        epochs
            .iter()
            .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
            .collect()
    };
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"#
    );
    let _ = write!(
        svg,
        r##"<text x="{}" y="16" font-size="13" text-anchor="middle" fill="#555">{}</text>"##,
        W / 2.0,
        esc(title)
    );
    let (tr, va) = ("#1f77b4", "#ff7f0e");
    chart(
        &mut svg,
        0.0,
        10.0,
        W / 2.0,
        H - 10.0,
        "loss",
        &[
            ("train", tr, pick(&|e| Some(e.train_loss))),
            ("validation", va, pick(&|e| e.val.as_ref().map(|v| v.loss()))),
        ],
        false,
    );
    chart(
        &mut svg,
        W / 2.0,
        10.0,
        W / 2.0,
        H - 10.0,
        "accuracy",
        &[
            ("train", tr, pick(&|e| Some(e.train_accuracy))),
            ("validation", va, pick(&|e| e.val.as_ref().map(|v| v.accuracy()))),
        ],
        true,
    );
    svg.push_str("</svg>\n");
    svg
}

/// The confusion matrix as a heat map with counts, rows the true class.
pub fn confusion_svg(confusion: &Confusion, labels: &[String], title: &str) -> String {
    let n = confusion.counts.len().max(1);
    let cell = (480.0 / n as f64).clamp(24.0, 60.0);
    let (left, top) = (130.0, 70.0);
    let size = cell * n as f64;
    let (w, h) = (left + size + 30.0, top + size + 110.0);
    let max = confusion.counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"#
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="24" font-size="15" font-weight="bold" text-anchor="middle">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">predicted class</text>"#,
        left + size / 2.0,
        top + size + 100.0
    );
    let _ = write!(
        svg,
        r#"<text x="14" y="{}" font-size="12" transform="rotate(-90 14 {})" text-anchor="middle">true class</text>"#,
        top + size / 2.0,
        top + size / 2.0
    );
    for (t, row) in confusion.counts.iter().enumerate() {
        let label = esc(labels.get(t).map(String::as_str).unwrap_or(""));
        let y = top + cell * t as f64;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{label}</text>"#,
            left - 6.0,
            y + cell / 2.0 + 4.0
        );
        let x = left + cell * t as f64 + cell / 2.0;
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{0}" font-size="11" text-anchor="end" transform="rotate(-45 {x} {0})">{label}</text>"#,
            top + size + 14.0
        );
        for (p, &c) in row.iter().enumerate() {
            let v = c as f64 / max;
            let shade = (255.0 * (1.0 - v)).round() as u8;
            let fill = if t == p {
                format!("rgb({shade},{},{shade})", 255 - (v * 110.0) as u8)
            } else {
                format!("rgb(255,{shade},{shade})")
            };
            let text = if v > 0.5 { "white" } else { "black" };
            let x = left + cell * p as f64;
            let _ = write!(
                svg,
                r##"<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" stroke="#ddd"/><text x="{}" y="{}" font-size="10" text-anchor="middle" fill="{text}">{c}</text>"##,
                x + cell / 2.0,
                y + cell / 2.0 + 4.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// Redraws `curves.svg` and `confusion.svg` of a run folder from its `metrics.jsonl`
/// (the confusion matrix of the test record, else of the last epoch's validation).
pub fn redraw(run: &std::path::Path, labels: &[String], name: &str) -> crate::Result<()> {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| crate::Error::io(&path, e))?;
    let mut epochs = Vec::new();
    let mut confusion = None;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match v["kind"].as_str() {
            Some("epoch") => {
                if let Ok(e) = serde_json::from_value::<EpochReport>(v) {
                    confusion = e
                        .val
                        .as_ref()
                        .and_then(|v| v.confusion())
                        .map(|c| (c.clone(), "validation confusion matrix, last epoch"));
                    epochs.push(e);
                }
            }
            Some("test") => {
                if let Ok(c) = serde_json::from_value::<Confusion>(v["test"]["confusion"].clone()) {
                    confusion = Some((c, "test confusion matrix"));
                }
            }
            _ => {}
        }
    }
    let write = |file: &str, svg: String| {
        kiln_package::atomic::write_file(&run.join(file), svg.as_bytes())
            .map_err(|e| crate::Error::io(run.join(file), e))
    };
    write("curves.svg", curves_svg(&epochs, name))?;
    if let Some((c, what)) = confusion {
        write("confusion.svg", confusion_svg(&c, labels, &format!("{name}: {what}")))?;
    }
    Ok(())
}
