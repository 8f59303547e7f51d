//! The flash sale's pure checks and summaries (`examples/flash_sale.rs`): the grouped way's
//! write order, latency percentiles, batch sizes.

use std::time::Duration;

/// The grouped orders' check — each (revision, index in its batch, stock it saw, batch
/// size): taken in token order, they saw `units`, `units - 1`, …, 1. The number of orders
/// out of that order (0 when right), one more if there are not `units` of them. Sorts
/// `orders`.
pub fn grouped_out_of_order(orders: &mut [(i64, u64, u64, usize)], units: u64) -> u64 {
    orders.sort_unstable_by_key(|&(rev, index, ..)| (rev, index));
    let mut bad = u64::from(orders.len() as u64 != units);
    for (i, &(_, _, seen, _)) in orders.iter().enumerate() {
        // An order past the stock (an oversell) saw no unit it could have sold.
        bad += u64::from(units.checked_sub(i as u64) != Some(seen));
    }
    bad
}

/// The `p` quantile of `sorted` (zero if empty).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The grouped way's batches: how many, and their sizes.
pub fn batch_summary(orders: &[(i64, u64, u64, usize)]) -> String {
    let mut sizes: Vec<usize> = Vec::new();
    let mut last = None;
    for &(rev, _, _, size) in orders {
        if last != Some(rev) {
            sizes.push(size);
            last = Some(rev);
        }
    }
    sizes.sort_unstable();
    let n = sizes.len().max(1);
    let mean = sizes.iter().sum::<usize>() as f64 / n as f64;
    let at = |p: f64| sizes.get(((sizes.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(0);
    format!(
        "grouped: {} batches, orders per batch mean {mean:.1}, p50 {}, p90 {}, max {}",
        sizes.len(),
        at(0.5),
        at(0.9),
        sizes.last().copied().unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An oversold grouped sale (more orders than units) is reported, not a panic.
    #[test]
    fn an_oversold_grouped_sale_is_counted_out_of_order() {
        let mut fine = vec![(5, 0, 2, 0), (5, 1, 1, 1)];
        assert_eq!(grouped_out_of_order(&mut fine, 2), 0);
        let mut oversold = vec![(5, 0, 1, 0), (6, 0, 0, 1), (7, 0, 0, 2)];
        // Three orders for one unit (1), the third past the stock (1).
        assert_eq!(grouped_out_of_order(&mut oversold, 1), 2);
    }
}
