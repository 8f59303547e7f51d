//! The last few measurements of a quantity, and their median.

use super::SAMPLES;

/// The last [`SAMPLES`] measurements of something (a mode's cost in the crowd; the
/// ratio of an adaptive register handle's queue, `src/adaptive.rs`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Samples {
    last: [f64; SAMPLES],
    pub(crate) len: usize,
    next: usize,
}

impl Samples {
    pub(crate) fn push(&mut self, x: f64) {
        self.last[self.next] = x;
        self.next = (self.next + 1) % SAMPLES;
        self.len = (self.len + 1).min(SAMPLES);
    }

    /// How many of the measurements kept are above `x`.
    pub(crate) fn above(&self, x: f64) -> usize {
        self.last[..self.len].iter().filter(|&&v| v > x).count()
    }

    /// The median (of two: their mean).
    pub(crate) fn median(&self) -> Option<f64> {
        let mut v = self.last;
        let v = &mut v[..self.len];
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => None,
            n if n % 2 == 1 => Some(v[n / 2]),
            n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }
}
