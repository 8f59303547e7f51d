//! The sweep's plot: updates per second and p99 latency against contenders, one row of
//! panels per critical-section length.

use super::{Args, Cell, Way};
use plotters::prelude::*;

pub fn plot(
    cells: &[Cell],
    ways: &[Way],
    args: &Args,
    path: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let rows = args.cs_ms.len();
    let root = SVGBackend::new(path, (1100, 380 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((rows, 2));
    let max_n = *args.contenders.iter().max().unwrap() as f64;
    for (r, &cs) in args.cs_ms.iter().enumerate() {
        for (col, (title, metric)) in [("updates/s", 0usize), ("p99 latency, ms", 1usize)].into_iter().enumerate() {
            let value = |c: &Cell| if metric == 0 { c.ops_per_s } else { c.p99_ms };
            let ys: Vec<f64> = cells.iter().filter(|c| c.cs_ms == cs).map(value).collect();
            let (lo, hi) =
                (ys.iter().cloned().fold(f64::MAX, f64::min).max(0.01), ys.iter().cloned().fold(0.0, f64::max));
            let mut chart = ChartBuilder::on(&panels[r * 2 + col])
                .caption(format!("{title} — critical section {cs} ms"), ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(60)
                .build_cartesian_2d((1f64..max_n).log_scale(), (lo * 0.8..hi * 1.25).log_scale())?;
            chart.configure_mesh().x_desc("contenders").y_desc(title).draw()?;
            for &w in ways {
                let pts: Vec<(f64, f64)> = args
                    .contenders
                    .iter()
                    .filter_map(|&n| cells.iter().find(|c| c.way == w && c.contenders == n && c.cs_ms == cs))
                    .map(|c| (c.contenders as f64, value(c)))
                    .collect();
                let color = w.color();
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                    .label(w.name())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
            }
            chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
        }
    }
    root.present()?;
    Ok(())
}
