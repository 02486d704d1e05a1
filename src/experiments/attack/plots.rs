//! The attack's success table and plots.

use super::{AttackReport, Method, MethodRate};
use crate::error::Result;

fn fmt_rate(r: &MethodRate) -> String {
    match (r.rate, r.mean_norm) {
        (Some(p), Some(n)) => format!("{:.3} ({:.2})", p, n),
        _ => "–".into(),
    }
}

/// The success table (Markdown): one row per method, one column per budget; cells
/// "rate (mean actual L2 norm)".
pub fn table(r: &AttackReport) -> String {
    let mut s = String::new();
    let mut section = |methods: &[Method], budgets: Vec<f64>, head: &str| {
        if budgets.is_empty() {
            return;
        }
        s.push_str(&format!("| method | {} |\n", {
            budgets
                .iter()
                .map(|b| format!("{head}{b}"))
                .collect::<Vec<_>>()
                .join(" | ")
        }));
        s.push_str(&format!("|---|{}\n", "---|".repeat(budgets.len())));
        for &m in methods {
            let cells: Vec<String> = budgets
                .iter()
                .map(|&b| {
                    r.results
                        .iter()
                        .find(|x| x.method == m && x.budget.to_bits() == b.to_bits())
                        .map(fmt_rate)
                        .unwrap_or_else(|| "–".into())
                })
                .collect();
            s.push_str(&format!("| {} | {} |\n", m.name(), cells.join(" | ")));
        }
        s.push('\n');
    };
    section(&Method::CONTINUOUS, r.settings.epsilons.clone(), "ε=");
    section(
        &Method::BINARY,
        r.settings.pixels.iter().map(|&k| k as f64).collect(),
        "k=",
    );
    s
}

/// Draw `attack_curves.png` (success rate against mean actual L2 norm, one curve per method) and,
/// for image data, `attack_examples.png`; returns the files written.
pub fn write_plots(
    r: &AttackReport,
    dir: &std::path::Path,
    image_shape: Option<(usize, usize)>,
    class_names: &[String],
) -> Result<Vec<std::path::PathBuf>> {
    use crate::report::{image_grid, line_plot, LinePlot, Point, Series};
    let mut files = Vec::new();
    let series: Vec<Series> = Method::CONTINUOUS
        .iter()
        .chain(Method::BINARY.iter())
        .map(|&m| {
            Series::with_points(
                m.name(),
                r.results
                    .iter()
                    .filter(|x| x.method == m)
                    .filter_map(|x| Point::rate(x.mean_norm?, x.successes, x.attacked))
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if !series.is_empty() {
        let p = dir.join("attack_curves.png");
        line_plot(
            &p,
            &LinePlot {
                title: &format!(
                    "Attack success (served class changes), {} of {} inputs attacked",
                    r.n_correct, r.n_inputs
                ),
                x_label:
                    "mean actual L2 norm of the perturbation (pixel units; binary: √k for k flips)",
                y_label: "success rate (fraction of attacked inputs)",
                log_y: false,
                bars: Some("error bars: ± 1 binomial standard error over the attacked inputs"),
            },
            &series,
        )?;
        files.push(p);
    }
    if let Some(shape) = image_shape {
        let name = |c: usize| class_names.get(c).cloned().unwrap_or_else(|| c.to_string());
        let mut imgs: Vec<(String, Vec<f64>)> = Vec::new();
        for i in r.inputs.iter().filter(|i| i.correct).take(4) {
            imgs.push((
                format!("#{} served {}", i.index, name(i.served_class)),
                i.clean.iter().map(|&v| v as f64).collect(),
            ));
            for (m, b, xp, c) in &i.examples {
                let unit = if m.is_binary() { "k" } else { "ε" };
                imgs.push((
                    format!("{} {unit}={b}: {}", m.name(), name(*c)),
                    xp.iter().map(|&v| v as f64).collect(),
                ));
            }
        }
        if !imgs.is_empty() && imgs.iter().all(|(_, v)| v.len() == shape.0 * shape.1) {
            let p = dir.join("attack_examples.png");
            image_grid(
                &p,
                "Originals and perturbed inputs (titles: served class)",
                &imgs,
                shape,
            )?;
            files.push(p);
        }
    }
    Ok(files)
}
