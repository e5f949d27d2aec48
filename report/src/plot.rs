//! The project's one plotting stack: line charts (linear, fitted or logarithmic y), bar charts,
//! grids of charts, one palette, written as SVG (always) and PNG (where the bitmap backend finds a
//! font). The report and the simulator both draw with it, so every figure looks alike.
use std::path::Path;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;

/// The palette, in the order series take their colours (Tableau-like, distinguishable in print);
/// ten colours, so the classes of a ten-class dataset each get their own.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(0, 0, 0),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
];

/// The `i`-th colour of the palette (cycling).
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// How a chart's y axis is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YScale {
    /// Linear, from 0 (or below, if the data goes below) to the maximum.
    FromZero,
    /// Linear, fitted to the data's range.
    Fitted,
    /// Logarithmic (non-positive values are left out).
    Log,
}

/// Where a chart's legend stands.
pub use plotters::chart::SeriesLabelPosition as LegendPosition;

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Line {
    /// Shown in the legend; `None` for lines that repeat an entry already there.
    pub label: Option<String>,
    /// Index into the palette.
    pub color: usize,
    /// Stroke width in pixels.
    pub width: u32,
    pub points: Vec<(f64, f64)>,
}

impl Line {
    pub fn new(label: impl Into<String>, color: usize, points: Vec<(f64, f64)>) -> Line {
        Line {
            label: Some(label.into()),
            color,
            width: 2,
            points,
        }
    }
}

/// A shaded band between two curves (a range over workers, an error bar over time), drawn under
/// the lines in a light shade of its palette colour.
#[derive(Clone, Debug)]
pub struct Band {
    pub color: usize,
    /// `(x, low, high)`, by increasing x.
    pub points: Vec<(f64, f64, f64)>,
}

/// A line chart.
#[derive(Clone, Debug)]
pub struct LineChart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub y_scale: YScale,
    /// `None`: no legend.
    pub legend: Option<LegendPosition>,
    pub lines: Vec<Line>,
    pub bands: Vec<Band>,
}

/// A bar chart: groups of bars (one group per x label), one bar per series in each group, side
/// by side or stacked; the legend stands below the chart, clear of the bars.
#[derive(Clone, Debug)]
pub struct BarChart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    /// One label per group.
    pub groups: Vec<String>,
    /// `(label, values per group)`. A value that is not finite draws no bar (e.g. a target never
    /// reached).
    pub series: Vec<(String, Vec<f64>)>,
    /// The palette colour of each series (so a run keeps its colour when runs are left out);
    /// empty: series k takes colour k.
    pub colors: Vec<usize>,
    /// The series of a group stacked into one bar (parts of a whole) rather than side by side.
    pub stacked: bool,
}

/// A figure: one chart, or several side by side and one above the other.
#[derive(Clone, Debug)]
pub enum Chart {
    Lines(LineChart),
    Bars(BarChart),
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plot: {e:?}")
}

fn format_tick(v: f64) -> String {
    if v == v.round() && v.abs() < 1e6 {
        format!("{v:.0}")
    } else if (0.01..1000.0).contains(&v.abs()) {
        format!("{v:.2}")
    } else {
        format!("{v:.1e}")
    }
}

fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    c: &LineChart,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let log = c.y_scale == YScale::Log;
    let keep = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite() && (!log || p.1 > 0.0);
    let lines: Vec<Vec<(f64, f64)>> = c
        .lines
        .iter()
        .map(|l| l.points.iter().copied().filter(keep).collect())
        .collect();
    let bands: Vec<Vec<(f64, f64, f64)>> = c
        .bands
        .iter()
        .map(|b| {
            b.points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite() && p.2.is_finite())
                .map(|(x, lo, hi)| {
                    // On a log axis the band stops at a tenth of its top rather than at zero.
                    let lo = if log { lo.max(hi * 0.1) } else { lo };
                    (x, lo, hi)
                })
                .filter(|p| !log || p.2 > 0.0)
                .collect()
        })
        .collect();
    let band_points: Vec<(f64, f64)> = bands
        .iter()
        .flatten()
        .flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)])
        .collect();
    let all = lines.iter().flatten().chain(band_points.iter());
    let x_min = all.clone().map(|p| p.0).fold(0.0, f64::min);
    let x_max = all
        .clone()
        .map(|p| p.0)
        .fold(0.0, f64::max)
        .max(x_min + 1e-9);
    let y_min = all.clone().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let y_max = all.map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let empty = !y_min.is_finite();
    let (y_lo, y_hi) = match c.y_scale {
        _ if empty => (1e-3, 1.0),
        YScale::Log => (y_min * 0.8, y_max * 1.25),
        YScale::Fitted => {
            let pad = 0.05 * (y_max - y_min).max(1e-6);
            (y_min - pad, y_max + pad)
        }
        YScale::FromZero => (y_min.min(0.0), y_max * 1.1 + 1e-9),
    };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&c.title, ("sans-serif", 17))
        .margin(10)
        .margin_right(24)
        .x_label_area_size(36)
        .y_label_area_size(70);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(c.x_desc.as_str())
                .y_desc(c.y_desc.as_str())
                .x_labels(6)
                .y_labels(8)
                .x_label_formatter(&|v| {
                    if v.abs() >= 100.0 || *v == v.round() {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.2}")
                    }
                })
                .y_label_formatter(&|v| format_tick(*v))
                .max_light_lines(0)
                .draw()
                .map_err(plot_err)?;
            for (band, points) in c.bands.iter().zip(&bands) {
                if points.len() < 2 {
                    continue;
                }
                let outline: Vec<(f64, f64)> = points
                    .iter()
                    .map(|p| (p.0, p.2))
                    .chain(points.iter().rev().map(|p| (p.0, p.1)))
                    .collect();
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        outline,
                        color(band.color).mix(0.18).filled(),
                    )))
                    .map_err(plot_err)?;
            }
            for (line, points) in c.lines.iter().zip(lines) {
                if points.is_empty() {
                    continue;
                }
                let color = color(line.color);
                // A line of one point is drawn as a dot, so it does not vanish.
                let series = if points.len() == 1 {
                    chart.draw_series(std::iter::once(Circle::new(
                        points[0],
                        line.width + 2,
                        color.filled(),
                    )))
                } else {
                    chart.draw_series(LineSeries::new(points, color.stroke_width(line.width)))
                }
                .map_err(plot_err)?;
                if let Some(label) = &line.label {
                    series.label(label.clone()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                }
            }
            if let Some(position) = &c.legend {
                chart
                    .configure_series_labels()
                    .position(position.clone())
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw()
                    .map_err(plot_err)?;
            }
        }};
    }
    if log {
        // Base-2 key points give several labels on the narrow ranges training curves span.
        let range = (y_lo..y_hi).log_scale();
        let range = if y_hi / y_lo < 1e3 {
            range.base(2.0)
        } else {
            range
        };
        finish!(builder
            .build_cartesian_2d(x_min..x_max, range)
            .map_err(plot_err)?);
    } else {
        finish!(builder
            .build_cartesian_2d(x_min..x_max, y_lo..y_hi)
            .map_err(plot_err)?);
    }
    Ok(())
}

/// Entries `(label, colour)` laid out in rows across `area`'s width: a filled square and the label.
/// Returns the height they take; draws only when `draw`.
fn legend_rows<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, RGBColor)],
    draw: bool,
) -> anyhow::Result<u32>
where
    DB::ErrorType: 'static,
{
    const ROW: i32 = 18;
    let font = TextStyle::from(("sans-serif", 13).into_font());
    let width = area.dim_in_pixel().0 as i32;
    let (mut x, mut y) = (70, 4);
    for (label, color) in entries {
        let text = area
            .estimate_text_size(label, &font)
            .map_or(7 * label.chars().count() as i32, |s| s.0 as i32);
        let entry = 18 + text + 16;
        if x + entry > width && x > 70 {
            x = 70;
            y += ROW;
        }
        if draw {
            area.draw(&Rectangle::new(
                [(x, y + 2), (x + 12, y + 14)],
                color.filled(),
            ))
            .map_err(plot_err)?;
            area.draw(&Text::new(label.clone(), (x + 18, y + 1), font.clone()))
                .map_err(plot_err)?;
        }
        x += entry;
    }
    Ok((y + ROW + 4) as u32)
}

fn draw_bars<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &BarChart) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let groups = c.groups.len().max(1);
    let value = |k: usize, g: usize| {
        c.series[k]
            .1
            .get(g)
            .copied()
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let top = (0..groups)
        .map(|g| {
            let values = (0..c.series.len()).filter_map(|k| value(k, g));
            if c.stacked {
                values.sum::<f64>()
            } else {
                values.fold(0.0, f64::max)
            }
        })
        .fold(0.0, f64::max);
    let y_max = if top > 0.0 { top * 1.1 } else { 1.0 };
    // The legend below the chart, as many rows as its entries need.
    let series_color = |k: usize| color(c.colors.get(k).copied().unwrap_or(k));
    let entries: Vec<(String, RGBColor)> = c
        .series
        .iter()
        .enumerate()
        .map(|(k, s)| (s.0.clone(), series_color(k)))
        .collect();
    let legend_height = legend_rows(area, &entries, false)?;
    let height = area.dim_in_pixel().1;
    let (plot_area, legend_area) =
        area.split_vertically(height.saturating_sub(legend_height).max(height / 2));
    legend_rows(&legend_area, &entries, true)?;
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(&c.title, ("sans-serif", 17))
        .margin(10)
        .margin_right(24)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..(groups as f64 - 0.5), 0.0..y_max)
        .map_err(plot_err)?;
    let labels = c.groups.clone();
    chart
        .configure_mesh()
        .x_desc(c.x_desc.as_str())
        .y_desc(c.y_desc.as_str())
        .x_labels(groups.min(16))
        .x_label_formatter(&|v| {
            let i = v.round();
            if i >= 0.0 && (i as usize) < labels.len() && (v - i).abs() < 1e-6 {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| format_tick(*v))
        .max_light_lines(0)
        .draw()
        .map_err(plot_err)?;
    // Side by side, a lone series' bars are as wide as two.
    let width = if c.stacked {
        0.8
    } else {
        0.8 / c.series.len().max(2) as f64
    };
    let mut bottoms = vec![0.0; groups];
    for k in 0..c.series.len() {
        let color = series_color(k);
        let bars: Vec<Rectangle<(f64, f64)>> = (0..groups)
            .filter_map(|g| {
                let v = value(k, g)?;
                let (x0, y0) = if c.stacked {
                    (g as f64 - 0.4, bottoms[g])
                } else {
                    (
                        g as f64 - width * c.series.len() as f64 / 2.0 + k as f64 * width,
                        0.0,
                    )
                };
                if c.stacked {
                    bottoms[g] += v;
                }
                let x1 = x0 + width * if c.stacked { 1.0 } else { 0.9 };
                Some(Rectangle::new([(x0, y0), (x1, y0 + v)], color.filled()))
            })
            .collect();
        chart.draw_series(bars).map_err(plot_err)?;
    }
    Ok(())
}

fn draw_grid<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    (rows, cols): (usize, usize),
    charts: &[Chart],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(plot_err)?;
    let cells = root.split_evenly((rows.max(1), cols.max(1)));
    for (cell, chart) in cells.iter().zip(charts) {
        match chart {
            Chart::Lines(c) => draw_lines(cell, c)?,
            Chart::Bars(c) => draw_bars(cell, c)?,
        }
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Draws `charts` in a grid of `rows × cols` cells (row by row) into `path`: PNG if it ends in
/// `.png`, else SVG. `size` is the whole figure's, in pixels.
pub fn write_figure(
    path: &Path,
    size: (u32, u32),
    grid: (usize, usize),
    charts: &[Chart],
) -> anyhow::Result<()> {
    let png = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("png"));
    let drawn = if png {
        // The bitmap backend needs a system font for text; without one it panics inside plotters.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            draw_grid(
                BitMapBackend::new(path, size).into_drawing_area(),
                grid,
                charts,
            )
        }))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no font for the bitmap backend")))
    } else {
        draw_grid(
            SVGBackend::new(path, size).into_drawing_area(),
            grid,
            charts,
        )
    };
    drawn.with_context(|| format!("writing the plot {}", path.display()))
}

/// Writes `dir/name.svg` and, where the bitmap backend can render text here, `dir/name.png`.
/// Returns whether the PNG was written.
pub fn write_svg_and_png(
    dir: &Path,
    name: &str,
    size: (u32, u32),
    grid: (usize, usize),
    charts: &[Chart],
) -> anyhow::Result<bool> {
    write_figure(&dir.join(format!("{name}.svg")), size, grid, charts)?;
    let png = dir.join(format!("{name}.png"));
    match write_figure(&png, size, grid, charts) {
        Ok(()) => Ok(true),
        Err(e) => {
            let _ = std::fs::remove_file(&png);
            tracing::debug!("{name}.png skipped: {e:#}");
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_holds_every_line_and_the_legend() {
        let dir = tempfile::tempdir().unwrap();
        let chart = Chart::Lines(LineChart {
            title: "t".into(),
            x_desc: "x".into(),
            y_desc: "y".into(),
            y_scale: YScale::Log,
            legend: Some(LegendPosition::UpperRight),
            lines: vec![
                Line::new("first", 0, vec![(0.0, 1.0), (1.0, 0.5), (2.0, 0.25)]),
                Line::new("second", 1, vec![(0.0, 2.0), (1.0, -1.0), (2.0, 0.1)]),
                Line::new("dot", 2, vec![(1.5, 0.7)]),
            ],
            bands: vec![Band {
                color: 0,
                points: vec![(0.0, 0.8, 1.2), (1.0, 0.4, 0.6), (2.0, 0.2, 0.3)],
            }],
        });
        let bars = Chart::Bars(BarChart {
            title: "b".into(),
            x_desc: "rank".into(),
            y_desc: "count".into(),
            groups: vec!["0".into(), "1".into()],
            series: vec![("run".into(), vec![3.0, 4.0])],
            colors: Vec::new(),
            stacked: false,
        });
        write_svg_and_png(dir.path(), "fig", (800, 400), (1, 2), &[chart, bars]).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("fig.svg")).unwrap();
        // Each line and its legend mark in the line's palette colour; both labels in the legend.
        for (hex, label) in [("#D62728", "first"), ("#1F77B4", "second")] {
            let strokes = svg.matches(&format!("stroke=\"{hex}\"")).count();
            assert_eq!(strokes, 2, "{hex}: the line and its legend mark");
            assert!(svg.lines().any(|l| l.trim() == label), "{label} missing");
        }
        assert_eq!(svg.matches("<polygon").count(), 1, "the band");
        // A one-point line: a dot in its colour, and its legend mark.
        assert_eq!(svg.matches("<circle").count(), 1, "the dot");
        assert!(svg.contains("fill=\"#2CA02C\"") && svg.lines().any(|l| l.trim() == "dot"));
        // The bars, in the first palette colour.
        assert!(svg.matches("fill=\"#D62728\"").count() >= 2, "two bars");
    }

    /// The `(x, y, width, height)` of the filled rectangles of colour `hex` in an SVG.
    fn rects(svg: &str, hex: &str) -> Vec<(f64, f64, f64, f64)> {
        let attr = |l: &str, name: &str| -> f64 {
            let rest = &l[l.find(&format!(" {name}=\"")).unwrap() + name.len() + 3..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        };
        svg.lines()
            .map(str::trim)
            .filter(|l| l.starts_with("<rect") && l.contains(&format!("fill=\"{hex}\"")))
            .map(|l| {
                (
                    attr(l, "x"),
                    attr(l, "y"),
                    attr(l, "width"),
                    attr(l, "height"),
                )
            })
            .collect()
    }

    #[test]
    fn stacked_bars_pile_up_and_missing_values_draw_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.svg");
        let stacked = Chart::Bars(BarChart {
            title: "t".into(),
            x_desc: "rank".into(),
            y_desc: "rows".into(),
            groups: vec!["0".into(), "1".into()],
            series: vec![
                ("class 0".into(), vec![10.0, 30.0]),
                ("class 1".into(), vec![30.0, f64::NAN]),
            ],
            colors: Vec::new(),
            stacked: true,
        });
        write_figure(&path, (600, 400), (1, 1), &[stacked]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        // Class 0: the legend mark (drawn first, below the chart) and two bars; class 1: its
        // mark and one bar (NaN draws none).
        let (c0, c1) = (rects(&svg, "#D62728"), rects(&svg, "#1F77B4"));
        assert_eq!((c0.len(), c1.len()), (3, 2));
        assert!(
            c0[0].1 > c0[1].1 + c0[1].3,
            "the legend stands below the bars"
        );
        let (c0, c1) = (&c0[1..], &c1[1..]);
        // Rank 0: class 1 (30 rows) sits right on top of class 0 (10 rows), three times as tall,
        // in the same column.
        let (a, b) = (c0[0], c1[0]);
        assert!((b.1 + b.3 - a.1).abs() <= 1.0, "{a:?} {b:?}");
        assert!((b.3 / a.3 - 3.0).abs() < 0.1, "{a:?} {b:?}");
        assert!((a.0 - b.0).abs() <= 1.0 && (a.2 - b.2).abs() <= 1.0);
        // Rank 1's class 0 alone (30 rows) is as tall as rank 0's class 1 and starts at the axis.
        let c = c0[1];
        assert!((c.3 - b.3).abs() <= 1.0 && (c.1 + c.3 - (a.1 + a.3)).abs() <= 1.0);

        // Side by side with chosen colours: series 0 takes colour 2, series 1 colour 0.
        let grouped = Chart::Bars(BarChart {
            title: "t".into(),
            x_desc: "target".into(),
            y_desc: "seconds".into(),
            groups: vec!["80%".into(), "90%".into()],
            series: vec![
                ("late run".into(), vec![5.0, f64::NAN]),
                ("first run".into(), vec![2.0, 4.0]),
            ],
            colors: vec![2, 0],
            stacked: false,
        });
        write_figure(&path, (600, 400), (1, 1), &[grouped]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            rects(&svg, "#2CA02C").len(),
            1 + 1,
            "one bar and the legend mark"
        );
        assert_eq!(rects(&svg, "#D62728").len(), 2 + 1);
        assert!(rects(&svg, "#1F77B4").is_empty(), "colour 1 unused");
    }
}
