//! A fixed-size log-linear latency histogram (128 sub-buckets per power of two, so any
//! reported percentile is within 0.8 % of the true value) with an exact maximum. It
//! takes 60 KB whatever the number of samples, which keeps long runs bounded in memory.

use serde::Serialize;

const SUB_BUCKET_BITS: u32 = 7;
const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS; // 128
/// Values below this are their own bucket.
const LINEAR_LIMIT: usize = 2 * SUB_BUCKETS; // 256
const BUCKETS: usize = LINEAR_LIMIT + (64 - (SUB_BUCKET_BITS as usize + 1)) * SUB_BUCKETS;

/// Counts of nanosecond values.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

/// The percentiles a run reports, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn bucket_of(v: u64) -> usize {
    if v < LINEAR_LIMIT as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= 8
    let shift = exp - SUB_BUCKET_BITS;
    let mantissa = (v >> shift) as usize; // in [128, 256)
    LINEAR_LIMIT + (exp as usize - (SUB_BUCKET_BITS as usize + 1)) * SUB_BUCKETS + (mantissa - SUB_BUCKETS)
}

/// The largest value that falls into bucket `i`.
fn bucket_high(i: usize) -> u64 {
    if i < LINEAR_LIMIT {
        return i as u64;
    }
    let j = i - LINEAR_LIMIT;
    let exp = (j / SUB_BUCKETS) as u32 + SUB_BUCKET_BITS + 1;
    let mantissa = (j % SUB_BUCKETS + SUB_BUCKETS) as u64;
    let shift = exp - SUB_BUCKET_BITS;
    (mantissa << shift) + ((1u64 << shift) - 1)
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }
}

impl Histogram {
    pub fn record(&mut self, nanos: u64) {
        self.counts[bucket_of(nanos)] += 1;
        self.total += 1;
        self.max = self.max.max(nanos);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1), as the upper bound of its bucket, never above the max.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(i).min(self.max);
            }
        }
        self.max
    }

    pub fn percentiles(&self) -> Percentiles {
        let ms = |ns: u64| ns as f64 / 1e6;
        Percentiles {
            samples: self.total,
            p50_ms: ms(self.quantile(0.50)),
            p99_ms: ms(self.quantile(0.99)),
            p999_ms: ms(self.quantile(0.999)),
            max_ms: ms(self.max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_whose_bounds_contain_it() {
        let mut v = 1u64;
        while v < u64::MAX / 3 {
            for x in [v - 1, v, v + 1, v + v / 3] {
                let b = bucket_of(x);
                assert!(b < BUCKETS);
                assert!(bucket_high(b) >= x, "{x} above its bucket {b}");
                if b > 0 {
                    assert!(bucket_high(b - 1) < x, "{x} below its bucket {b}");
                }
            }
            v = v * 3 / 2 + 1;
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 50_000_000.0 - 1.0).abs() < 0.01, "{p50}");
        assert!((p99 / 99_000_000.0 - 1.0).abs() < 0.01, "{p99}");
        assert_eq!(h.quantile(1.0), 100_000_000);
    }
}
