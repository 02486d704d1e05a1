//! What the experiments write besides their JSON: plots ([`plots`]), the summary statistics of
//! their tables ([`stats`]) and the comparisons between defences ([`compare`]), each written once
//! for every report.

pub mod compare;
pub mod plots;
pub mod stats;

pub use plots::{bar_grid, image_grid, line_plot, BarAxes, LinePlot, Point, Series};
