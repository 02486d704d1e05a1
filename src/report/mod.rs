//! What the experiments write besides their JSON: plots ([`plots`]) and the summary statistics of
//! their tables ([`stats`]), each written once for every report.

pub mod plots;
pub mod stats;

pub use plots::{bar_grid, image_grid, line_plot, Series};
