//! Plots (PNG, via plotters with an embedded DejaVu font so no system font library is needed).
//! Every file is drawn to a temporary name in its folder and renamed into place (atomic).

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;

use crate::error::{Error, Result};

static FONTS: Once = Once::new();

fn init_fonts() {
    FONTS.call_once(|| {
        // The font is a valid TTF shipped inside the dejavu crate; failure would be a build defect.
        let _ =
            plotters::style::register_font(style::FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(style::FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{}: cannot draw plot: {e}", path.display()))
}

/// The drawing area a plot draws on.
type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Draw a `size` PNG with a white background and an optional title into a temporary file beside
/// `path`, then rename it over `path`; `draw` fills the (title-less) area.
fn atomic_png(
    path: &Path,
    size: (u32, u32),
    title: Option<&str>,
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
) -> Result<()> {
    init_fonts();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{stem}.tmp-{}.png", std::process::id()));
    let render = || -> Result<()> {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        match title {
            Some(t) => draw(
                &root
                    .titled(t, (style::FONT, style::TITLE))
                    .map_err(|e| plot_err(path, e))?,
            )?,
            None => draw(&root)?,
        }
        root.present().map_err(|e| plot_err(path, e))
    };
    let res = render().and_then(|_| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// The shared style of every plot: fonts, sizes and the series colours. One place, so that all
/// plots read alike.
pub mod style {
    use plotters::style::RGBColor;

    /// Font family (DejaVu Sans, embedded).
    pub const FONT: &str = "sans-serif";
    /// Title size (px).
    pub const TITLE: u32 = 20;
    /// Axis descriptions and legend entries (px).
    pub const LABEL: u32 = 14;
    /// Tick labels (px).
    pub const TICK: u32 = 13;
    /// Panel captions and tick labels of small multiples (px).
    pub const SMALL: u32 = 11;
    /// Size of the data area of a line plot (px); the legend strip is added to its right.
    pub const LINE_PLOT: (u32, u32) = (860, 600);
    /// Estimated width of one character of [`LABEL`] text (px), for the legend's width.
    pub const CHAR_PX: u32 = 8;
    /// Line width of the curves (px).
    pub const STROKE: u32 = 2;

    /// Ten qualitative colours that stay apart (Tableau 10): curve `i` gets `SERIES[i % 10]`, and a
    /// marker shape that changes every 10 curves as well as every curve (circle, triangle, square).
    pub const SERIES: [RGBColor; 10] = [
        RGBColor(31, 119, 180),  // blue
        RGBColor(255, 127, 14),  // orange
        RGBColor(44, 160, 44),   // green
        RGBColor(214, 39, 40),   // red
        RGBColor(148, 103, 189), // purple
        RGBColor(140, 86, 75),   // brown
        RGBColor(227, 119, 194), // pink
        RGBColor(127, 127, 127), // grey
        RGBColor(188, 189, 34),  // olive
        RGBColor(23, 190, 207),  // cyan
    ];

    /// The colour of curve `i`.
    pub fn series_colour(i: usize) -> RGBColor {
        SERIES[i % SERIES.len()]
    }
}

/// One point of a curve, with an optional error bar from `bar.0` to `bar.1` (in y units).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Abscissa.
    pub x: f64,
    /// Ordinate.
    pub y: f64,
    /// The error bar's ends, when the value has a spread.
    pub bar: Option<(f64, f64)>,
}

impl Point {
    /// A point without error bar.
    pub fn new(x: f64, y: f64) -> Self {
        Point { x, y, bar: None }
    }

    /// A point with the bar `y ± half_width` (no bar when the half-width is not finite).
    pub fn plus_minus(x: f64, y: f64, half_width: Option<f64>) -> Self {
        let bar = half_width
            .filter(|h| h.is_finite())
            .map(|h| (y - h.abs(), y + h.abs()));
        Point { x, y, bar }
    }

    /// The median of `values` at `x` with their interquartile range as the bar (`None` without
    /// a finite value).
    pub fn median_iqr(x: f64, values: &[f64]) -> Option<Self> {
        Point::quartiles(x, &crate::report::stats::quartiles(values))
    }

    /// The median of summarised values at `x` with their interquartile range as the bar (none
    /// for a single value; `None` without a median).
    pub fn quartiles(x: f64, q: &crate::report::stats::Quartiles) -> Option<Self> {
        Some(Point {
            x,
            y: q.median?,
            bar: q.q1.zip(q.q3).filter(|_| q.n > 1),
        })
    }

    /// A success rate `successes / n` with ± one binomial standard error `sqrt(p(1−p)/n)`
    /// (`None` when `n` is 0).
    pub fn rate(x: f64, successes: usize, n: usize) -> Option<Self> {
        if n == 0 {
            return None;
        }
        let p = successes as f64 / n as f64;
        Some(Point::plus_minus(
            x,
            p,
            Some((p * (1.0 - p) / n as f64).sqrt()),
        ))
    }

    fn finite(&self) -> bool {
        self.x.is_finite() && self.y.is_finite()
    }
}

/// One named curve.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Its legend entry.
    pub name: String,
    /// Its points, in drawing order.
    pub points: Vec<Point>,
}

impl Series {
    /// A curve of points without error bars.
    pub fn new(name: impl Into<String>, points: impl IntoIterator<Item = (f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points: points.into_iter().map(|(x, y)| Point::new(x, y)).collect(),
        }
    }

    /// A curve of points with (optional) error bars.
    pub fn with_points(name: impl Into<String>, points: Vec<Point>) -> Self {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// What a line plot shows: its title, axis descriptions (with units) and scale.
#[derive(Clone, Copy, Debug)]
pub struct LinePlot<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// x axis description, with its unit.
    pub x_label: &'a str,
    /// y axis description, with its unit.
    pub y_label: &'a str,
    /// Logarithmic y axis (non-positive values are dropped then).
    pub log_y: bool,
    /// What the error bars mean (printed under the legend), when some point has one.
    pub bars: Option<&'a str>,
}

/// Whether every finite x is a whole number: the axis is then labelled with integers only.
pub fn is_integer_axis(xs: impl IntoIterator<Item = f64>) -> bool {
    xs.into_iter()
        .filter(|x| x.is_finite())
        .all(|x| x.fract() == 0.0 && x.abs() < 1e15)
}

/// The most tick labels (at most 10) for which plotters' ticks on `lo..hi` all fall on whole
/// numbers, so that an integer axis never shows 0.5 steps.
pub fn integer_tick_count(lo: f64, hi: f64) -> usize {
    use plotters::coord::ranged1d::Ranged;
    use plotters::coord::types::RangedCoordf64;
    let coord = RangedCoordf64::from(lo..hi);
    (1..=10usize)
        .rev()
        .find(|&n| {
            let pts = coord.key_points(n);
            !pts.is_empty() && pts.iter().all(|p| p.fract() == 0.0)
        })
        .unwrap_or(1)
}

/// Tick label of an integer axis: the whole number, never "3.0".
pub fn integer_tick(v: &f64) -> String {
    format!("{:.0}", v.round())
}

/// A tick label with at most four significant digits and no binary rounding noise (a log axis puts
/// ticks at values such as 0.30000000000000004): plain decimals from 10⁻³ up to 10⁴, scientific
/// notation with three significant digits outside, trailing zeros trimmed in both.
pub fn significant_tick(v: &f64) -> String {
    let v = *v;
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    let mag = v.abs().log10().floor() as i32;
    if !(-3..4).contains(&mag) {
        let s = format!("{v:.2e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        return format!("{}e{exponent}", trim(mantissa));
    }
    let decimals = (3 - mag).max(0) as usize;
    trim(&format!("{v:.decimals$}"))
}

/// Width (px) of the legend strip to the right of the data area: wide enough for the longest
/// legend entry (a 30 px line sample, a gap, the text) within [160, 420] px.
pub fn legend_width<'a>(labels: impl IntoIterator<Item = &'a str>) -> u32 {
    let chars = labels
        .into_iter()
        .map(|l| l.chars().count() as u32)
        .max()
        .unwrap_or(0);
    (56 + chars * style::CHAR_PX).clamp(160, 420)
}

/// Split `text` into lines of at most `width` characters at spaces (a longer word stays whole).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + word.chars().count() <= width => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// Draw the legend into its own strip `area` (beside the data, never over it): one line sample,
/// marker and name per series, then what the error bars mean.
fn draw_legend(area: &Area<'_>, path: &Path, names: &[&str], bars: Option<&str>) -> Result<()> {
    let font = (style::FONT, style::LABEL).into_font();
    let (w, _) = area.dim_in_pixel();
    let mut y = 50i32;
    for (i, name) in names.iter().enumerate() {
        let c = style::series_colour(i);
        area.draw(&PathElement::new(
            vec![(8, y), (38, y)],
            c.stroke_width(style::STROKE),
        ))
        .map_err(|e| plot_err(path, e))?;
        draw_marker(area, i, (23, y)).map_err(|e| plot_err(path, e))?;
        area.draw(&Text::new(name.to_string(), (46, y - 8), font.clone()))
            .map_err(|e| plot_err(path, e))?;
        y += 22;
    }
    if let Some(note) = bars {
        y += 8;
        let small = (style::FONT, style::SMALL)
            .into_font()
            .color(&BLACK.mix(0.7));
        let per_line = ((w.saturating_sub(16)) / 7).max(12) as usize;
        for line in wrap(note, per_line) {
            area.draw(&Text::new(line, (8, y), small.clone()))
                .map_err(|e| plot_err(path, e))?;
            y += 16;
        }
    }
    Ok(())
}

/// The marker of series `i` at pixel `p`: circle, triangle and square in turn.
fn draw_marker<DB: plotters::prelude::DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    i: usize,
    p: (i32, i32),
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let c = style::series_colour(i).filled();
    match i % 3 {
        0 => area.draw(&Circle::new(p, 4, c)),
        1 => area.draw(&TriangleMarker::new(p, 5, c)),
        _ => area.draw(&Rectangle::new([(p.0 - 4, p.1 - 4), (p.0 + 4, p.1 + 4)], c)),
    }
}

/// A line plot of several series with their error bars; the legend sits in a strip to the right
/// of the data area, and an x axis of whole numbers is labelled with whole numbers.
pub fn line_plot(path: &Path, plot: &LinePlot<'_>, series: &[Series]) -> Result<()> {
    let keep = |p: &Point| p.finite() && (!plot.log_y || p.y > 0.0);
    let pts: Vec<Point> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(keep)
        .collect();
    if pts.is_empty() {
        return Err(Error::invalid(format!(
            "{}: nothing to plot",
            path.display()
        )));
    }
    // The y range covers the error bars too (on a log axis, their positive part).
    let ys = pts.iter().flat_map(|p| {
        let mut v = vec![p.y];
        if let Some((lo, hi)) = p.bar {
            v.extend([lo, hi]);
        }
        v
    });
    let (y0, y1) = ys
        .filter(|y| y.is_finite() && (!plot.log_y || *y > 0.0))
        .fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    let (x0, x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.x), b.max(p.x)));
    let integer_x = is_integer_axis(pts.iter().map(|p| p.x));
    // Whole-number axes get half a unit of room at each end; others a little.
    let (x0, x1) = if integer_x {
        (x0 - 0.5, x1 + 0.5)
    } else if x1 > x0 {
        let pad = (x1 - x0) * 0.03;
        (x0 - pad, x1 + pad)
    } else {
        (x0 - 0.5, x0 + 0.5)
    };
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    let any_bar = pts.iter().any(|p| p.bar.is_some());
    let bars = plot.bars.filter(|_| any_bar);
    let legend_w = legend_width(names.iter().copied());
    let (w, h) = style::LINE_PLOT;
    atomic_png(path, (w + legend_w, h), Some(plot.title), |root| {
        let (data_area, legend_area) = root.split_horizontally(w);
        let mut b = ChartBuilder::on(&data_area);
        b.margin(15).x_label_area_size(50).y_label_area_size(80);
        let x_ticks = if integer_x {
            integer_tick_count(x0, x1)
        } else {
            10
        };
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                let mut mesh = chart.configure_mesh();
                mesh.x_desc(plot.x_label)
                    .y_desc(plot.y_label)
                    .axis_desc_style((style::FONT, style::LABEL))
                    .label_style((style::FONT, style::TICK))
                    .x_labels(x_ticks);
                if integer_x {
                    mesh.x_label_formatter(&integer_tick);
                }
                if plot.log_y {
                    mesh.y_label_formatter(&significant_tick);
                }
                mesh.draw().map_err(|e| plot_err(path, e))?;
                for (i, s) in series.iter().enumerate() {
                    let c = style::series_colour(i);
                    let v: Vec<Point> = s.points.iter().copied().filter(keep).collect();
                    // Error bars first, under the curve: a vertical line with 4 px caps.
                    for p in v.iter().filter_map(|p| p.bar.map(|b| (p.x, b))) {
                        let (x, (lo, hi)) = p;
                        let lo = if plot.log_y && lo <= 0.0 { y0 } else { lo };
                        chart
                            .draw_series(std::iter::once(PathElement::new(
                                vec![(x, lo), (x, hi)],
                                c.stroke_width(1),
                            )))
                            .map_err(|e| plot_err(path, e))?;
                        for end in [lo, hi] {
                            chart
                                .draw_series(std::iter::once(
                                    EmptyElement::at((x, end))
                                        + PathElement::new(
                                            vec![(-4, 0), (4, 0)],
                                            c.stroke_width(1),
                                        ),
                                ))
                                .map_err(|e| plot_err(path, e))?;
                        }
                    }
                    chart
                        .draw_series(LineSeries::new(
                            v.iter().map(|p| (p.x, p.y)),
                            c.stroke_width(style::STROKE),
                        ))
                        .map_err(|e| plot_err(path, e))?;
                    let filled = c.filled();
                    let at = |p: &Point| (p.x, p.y);
                    match i % 3 {
                        0 => chart.draw_series(v.iter().map(|p| Circle::new(at(p), 4, filled))),
                        1 => chart
                            .draw_series(v.iter().map(|p| TriangleMarker::new(at(p), 5, filled))),
                        _ => chart.draw_series(v.iter().map(|p| {
                            EmptyElement::at(at(p)) + Rectangle::new([(-4, -4), (4, 4)], filled)
                        })),
                    }
                    .map_err(|e| plot_err(path, e))?;
                }
            }};
        }
        if plot.log_y {
            let (lo, hi) = (y0 * 0.8, y1 * 1.25);
            draw!(b
                .build_cartesian_2d(x0..x1, (lo..hi).log_scale())
                .map_err(|e| plot_err(path, e))?);
        } else {
            let pad = ((y1 - y0) * 0.05).max(1e-12);
            draw!(b
                .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
                .map_err(|e| plot_err(path, e))?);
        }
        draw_legend(&legend_area, path, &names, bars)
    })
}

/// Diverging colour for a value in [-1, 1]: blue (negative) – white – red (positive).
fn diverging(v: f64) -> RGBColor {
    let t = v.clamp(-1.0, 1.0);
    let w = |a: f64| (255.0 * (1.0 - a)) as u8;
    if t >= 0.0 {
        RGBColor(255, w(t), w(t))
    } else {
        RGBColor(w(-t), w(-t), 255)
    }
}

/// A grid of images (`rows × cols` values each, drawn with a symmetric diverging colour scale per
/// image), e.g. input-Fisher eigenvectors.
pub fn image_grid(
    path: &Path,
    title: &str,
    images: &[(String, Vec<f64>)],
    shape: (usize, usize),
) -> Result<()> {
    if images.is_empty() || shape.0 * shape.1 == 0 {
        return Err(Error::invalid(format!(
            "{}: nothing to plot",
            path.display()
        )));
    }
    if let Some((n, _)) = images.iter().find(|(_, v)| v.len() != shape.0 * shape.1) {
        return Err(Error::shape(format!(
            "{}: image '{n}' does not have {}×{} values",
            path.display(),
            shape.0,
            shape.1
        )));
    }
    let per_row = images.len().min(5);
    let grid_rows = images.len().div_ceil(per_row);
    let cell = 180u32;
    let size = (cell * per_row as u32, cell * grid_rows as u32 + 40);
    atomic_png(path, size, Some(title), |root| {
        let areas = root.split_evenly((grid_rows, per_row));
        for ((name, v), area) in images.iter().zip(areas) {
            let scale = v.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-300);
            let mut chart = ChartBuilder::on(&area)
                .caption(name, (style::FONT, style::SMALL + 2))
                .margin(6)
                .build_cartesian_2d(0..shape.1 as i32, 0..shape.0 as i32)
                .map_err(|e| plot_err(path, e))?;
            chart
                .draw_series(
                    (0..shape.0)
                        .flat_map(|r| (0..shape.1).map(move |c| (r, c)))
                        .map(|(r, c)| {
                            let y = (shape.0 - 1 - r) as i32;
                            Rectangle::new(
                                [(c as i32, y), (c as i32 + 1, y + 1)],
                                diverging(v[r * shape.1 + c] / scale).filled(),
                            )
                        }),
                )
                .map_err(|e| plot_err(path, e))?;
        }
        Ok(())
    })
}

/// The axes of a grid of bar charts: what the bars are indexed by and what they measure.
#[derive(Clone, Copy, Debug)]
pub struct BarAxes<'a> {
    /// Description of the categories on the x axis.
    pub x_label: &'a str,
    /// Description (with unit) of the bar heights.
    pub y_label: &'a str,
}

/// Small multiples of bar charts (one panel per named vector, on a shared y scale), e.g. poison
/// directions per class; every panel carries both axis descriptions.
pub fn bar_grid(
    path: &Path,
    title: &str,
    axes: BarAxes<'_>,
    panels: &[(String, Vec<f64>)],
    x_labels: &[String],
) -> Result<()> {
    if panels.is_empty() {
        return Err(Error::invalid(format!(
            "{}: nothing to plot",
            path.display()
        )));
    }
    let per_row = panels.len().min(5);
    let grid_rows = panels.len().div_ceil(per_row);
    let size = (280 * per_row as u32, 230 * grid_rows as u32 + 40);
    let lim = panels
        .iter()
        .flat_map(|(_, v)| v.iter())
        .fold(0.0f64, |m, x| m.max(x.abs()))
        .max(1e-12)
        * 1.1;
    atomic_png(path, size, Some(title), |root| {
        for ((name, v), area) in panels.iter().zip(root.split_evenly((grid_rows, per_row))) {
            let n = v.len();
            let mut chart = ChartBuilder::on(&area)
                .caption(name, (style::FONT, style::LABEL))
                .margin(6)
                .x_label_area_size(34)
                .y_label_area_size(52)
                .build_cartesian_2d(-0.5..n as f64 - 0.5, -lim..lim)
                .map_err(|e| plot_err(path, e))?;
            // Bar i spans i ± 0.4, its label sits under its centre (a whole-number axis).
            let label = |x: &f64| {
                if *x < -0.5 {
                    return String::new();
                }
                x_labels
                    .get(x.round() as usize)
                    .cloned()
                    .unwrap_or_default()
            };
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(integer_tick_count(-0.5, n as f64 - 0.5))
                .x_label_formatter(&label)
                .x_desc(axes.x_label)
                .y_desc(axes.y_label)
                .axis_desc_style((style::FONT, style::SMALL))
                .label_style((style::FONT, style::SMALL - 1))
                .draw()
                .map_err(|e| plot_err(path, e))?;
            chart
                .draw_series(v.iter().enumerate().map(|(i, &y)| {
                    let col = if y >= 0.0 { RED } else { BLUE };
                    let x = i as f64;
                    Rectangle::new([(x - 0.4, 0.0), (x + 0.4, y)], col.mix(0.7).filled())
                }))
                .map_err(|e| plot_err(path, e))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_ticks_have_no_rounding_noise() {
        let cases = [
            (0.1 + 0.2, "0.3"),
            (3.0000000000000004, "3"),
            (0.012, "0.012"),
            (1234.6, "1235"),
            (12345.6, "1.23e4"),
            (1e4, "1e4"),
            (0.5, "0.5"),
            (20.0, "20"),
            (1e-5, "1e-5"),
            (2.5e6, "2.5e6"),
            (0.0, "0"),
            (-0.25, "-0.25"),
        ];
        for (v, want) in cases {
            assert_eq!(significant_tick(&v), want, "{v}");
        }
    }

    fn png_ok(p: &Path) {
        let b = std::fs::read(p).unwrap();
        assert_eq!(
            &b[..8],
            b"\x89PNG\r\n\x1a\n",
            "{} is not a PNG",
            p.display()
        );
        assert!(b.len() > 1000);
    }

    #[test]
    fn plots_are_written_as_png_without_leftovers() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lines.png");
        line_plot(
            &p,
            &LinePlot {
                title: "t",
                x_label: "x",
                y_label: "y",
                log_y: true,
                bars: Some("bars: ± 1 standard error"),
            },
            &[
                Series::with_points(
                    "a",
                    vec![
                        Point::plus_minus(1.0, 1.0, Some(0.5)),
                        Point::plus_minus(2.0, 0.5, Some(0.6)),
                    ],
                ),
                Series::new("b", vec![(1.0, 0.1), (2.0, 0.2)]),
            ],
        )
        .unwrap();
        png_ok(&p);
        let p2 = d.path().join("img.png");
        image_grid(&p2, "t", &[("u".into(), vec![1.0, -1.0, 0.5, 0.0])], (2, 2)).unwrap();
        png_ok(&p2);
        let p3 = d.path().join("bars.png");
        bar_grid(
            &p3,
            "t",
            BarAxes {
                x_label: "class",
                y_label: "u",
            },
            &[("c0".into(), vec![0.5, -0.5])],
            &["0".into(), "1".into()],
        )
        .unwrap();
        png_ok(&p3);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            3,
            "temporary files left behind"
        );
        let e = image_grid(
            &d.path().join("bad.png"),
            "t",
            &[("u".into(), vec![1.0])],
            (2, 2),
        )
        .unwrap_err();
        assert!(e.to_string().contains("2×2"));
        let axes = LinePlot {
            title: "t",
            x_label: "x",
            y_label: "y",
            log_y: false,
            bars: None,
        };
        assert!(line_plot(&d.path().join("e.png"), &axes, &[]).is_err());
    }

    #[test]
    fn integer_axes_get_whole_number_ticks_only() {
        use plotters::coord::ranged1d::Ranged;
        use plotters::coord::types::RangedCoordf64;
        assert!(is_integer_axis([1.0, 2.0, 6.0, f64::NAN]));
        assert!(!is_integer_axis([1.0, 2.5]));
        // The ranges line_plot builds for whole-number data: half a unit of room at each end.
        for (lo, hi) in [
            (1.0, 1.0),
            (1.0, 2.0),
            (1.0, 6.0),
            (2.0, 3.0),
            (0.0, 19.0),
            (0.0, 99.0),
        ] {
            let (a, b) = (lo - 0.5, hi + 0.5);
            let n = integer_tick_count(a, b);
            let ticks = RangedCoordf64::from(a..b).key_points(n);
            assert!(!ticks.is_empty(), "{lo}..{hi}: no tick");
            assert!(
                ticks.iter().all(|t| t.fract() == 0.0),
                "{lo}..{hi}: ticks {ticks:?}"
            );
            // As many ticks as fit: every whole number when there are few.
            if hi - lo < 5.0 {
                assert_eq!(ticks.len() as f64, hi - lo + 1.0, "{lo}..{hi}: {ticks:?}");
            }
        }
        // Ten ticks on 1..2 would be 0.1 steps: the count is what makes them whole.
        assert!(RangedCoordf64::from(0.5..2.5)
            .key_points(10)
            .iter()
            .any(|t| t.fract() != 0.0));
        assert_eq!(integer_tick(&3.0), "3");
        assert_eq!(integer_tick(&-2.0), "-2");
    }

    #[test]
    fn legend_strip_fits_the_longest_entry_beside_the_data() {
        let short = legend_width(["a", "b"]);
        let long = legend_width(["pairs' sampling noise (RMS if all were 0)"]);
        assert!(short >= 160);
        assert!(long > short);
        // 41 characters of 8 px each beside a 30 px line sample and gaps.
        assert!(long >= 41 * style::CHAR_PX + 46, "{long}");
        assert!(legend_width(["x".repeat(500).as_str()]) <= 420);
        // The strip is added to the right of the data area: the image is wider by exactly it.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l.png");
        let axes = LinePlot {
            title: "t",
            x_label: "x",
            y_label: "y",
            log_y: false,
            bars: None,
        };
        line_plot(&p, &axes, &[Series::new("a", vec![(1.0, 1.0), (2.0, 2.0)])]).unwrap();
        let b = std::fs::read(&p).unwrap();
        let width = u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
        assert_eq!(width, style::LINE_PLOT.0 + short);
    }

    #[test]
    fn series_colours_are_far_apart() {
        let n = style::SERIES.len();
        for i in 0..n {
            for j in i + 1..n {
                let (a, b) = (style::series_colour(i), style::series_colour(j));
                let d2 = [(a.0, b.0), (a.1, b.1), (a.2, b.2)]
                    .iter()
                    .map(|&(x, y)| (x as f64 - y as f64).powi(2))
                    .sum::<f64>();
                assert!(
                    d2.sqrt() > 60.0,
                    "colours {i} and {j} too close: {a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn error_bars_from_spreads() {
        let p = Point::median_iqr(2.0, &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!((p.x, p.y, p.bar), (2.0, 3.0, Some((2.0, 4.0))));
        assert_eq!(Point::median_iqr(1.0, &[7.0]).unwrap().bar, None);
        assert!(Point::median_iqr(1.0, &[f64::NAN]).is_none());
        let r = Point::rate(1.0, 1, 4).unwrap();
        let se = (0.25f64 * 0.75 / 4.0).sqrt();
        assert_eq!(r.bar, Some((0.25 - se, 0.25 + se)));
        assert!(Point::rate(1.0, 0, 0).is_none());
        assert_eq!(Point::plus_minus(0.0, 1.0, Some(f64::NAN)).bar, None);
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
    }
}
