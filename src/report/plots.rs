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
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
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
                    .titled(t, ("sans-serif", 20))
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

/// One named line of points.
pub type Series = (String, Vec<(f64, f64)>);

/// A line plot of several series (log-scale y when `log_y`; non-positive values are dropped then).
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
        .collect();
    if pts.is_empty() {
        return Err(Error::invalid(format!(
            "{}: nothing to plot",
            path.display()
        )));
    }
    let (x0, x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let size = (900, 600);
    atomic_png(path, size, None, |root| {
        let mut b = ChartBuilder::on(root);
        b.caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70);
        let style = |i: usize| Palette99::pick(i).stroke_width(2);
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(x_label)
                    .y_desc(y_label)
                    .label_style(("sans-serif", 14))
                    .draw()
                    .map_err(|e| plot_err(path, e))?;
                for (i, (name, v)) in series.iter().enumerate() {
                    let v: Vec<(f64, f64)> = v
                        .iter()
                        .copied()
                        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
                        .collect();
                    chart
                        .draw_series(LineSeries::new(v.clone(), style(i)))
                        .map_err(|e| plot_err(path, e))?
                        .label(name.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], style(i))
                        });
                    chart
                        .draw_series(
                            v.iter()
                                .map(|p| Circle::new(*p, 3, Palette99::pick(i).filled())),
                        )
                        .map_err(|e| plot_err(path, e))?;
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 14))
                    .draw()
                    .map_err(|e| plot_err(path, e))?;
            }};
        }
        if log_y {
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
        Ok(())
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
                .caption(name, ("sans-serif", 13))
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

/// Small multiples of bar charts (one panel per named vector), e.g. poison directions per class.
pub fn bar_grid(
    path: &Path,
    title: &str,
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
    let size = (260 * per_row as u32, 200 * grid_rows as u32 + 40);
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
                .caption(name, ("sans-serif", 13))
                .margin(6)
                .x_label_area_size(18)
                .y_label_area_size(36)
                .build_cartesian_2d(0..n as i32, -lim..lim)
                .map_err(|e| plot_err(path, e))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&|i| x_labels.get(*i as usize).cloned().unwrap_or_default())
                .label_style(("sans-serif", 10))
                .draw()
                .map_err(|e| plot_err(path, e))?;
            chart
                .draw_series(v.iter().enumerate().map(|(i, &y)| {
                    let col = if y >= 0.0 { RED } else { BLUE };
                    Rectangle::new([(i as i32, 0.0), (i as i32 + 1, y)], col.mix(0.7).filled())
                }))
                .map_err(|e| plot_err(path, e))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "t",
            "x",
            "y",
            &[
                ("a".into(), vec![(1.0, 1.0), (2.0, 0.5)]),
                ("b".into(), vec![(1.0, 0.1), (2.0, 0.2)]),
            ],
            true,
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
        assert!(line_plot(&d.path().join("e.png"), "t", "x", "y", &[], false).is_err());
    }
}
