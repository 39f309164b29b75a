//! What to ask for next: a seeded random generator, Zipf popularity over the blob population,
//! and the request mix (full reads, ranges, HEADs, inference). Pure logic, no I/O, so the
//! distributions are tested exactly and a run is reproducible from its seed.

/// SplitMix64: small, fast and good enough for choosing requests (not for cryptography).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: unbiased enough for load generation, and never divides by zero.
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }
}

/// Zipf popularity over `n` items: item of rank `k` (0-based) is drawn with probability
/// proportional to `1 / (k + 1)^s`. `s = 0` is uniform.
#[derive(Debug, Clone)]
pub struct Zipf {
    /// Cumulative weights, normalised so the last is 1.
    cdf: Vec<f64>,
}

impl Zipf {
    /// `n >= 1`, `s >= 0` and finite.
    pub fn new(n: usize, s: f64) -> Self {
        let n = n.max(1);
        let s = if s.is_finite() && s > 0.0 { s } else { 0.0 };
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 0..n {
            total += 1.0 / ((k + 1) as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self { cdf }
    }

    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// The probability of rank `k`.
    pub fn probability(&self, k: usize) -> f64 {
        match k {
            0 => self.cdf[0],
            k if k < self.cdf.len() => self.cdf[k] - self.cdf[k - 1],
            _ => 0.0,
        }
    }

    /// The rank for a uniform draw `u` in `[0, 1)`.
    pub fn rank(&self, u: f64) -> usize {
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        self.rank(rng.unit())
    }
}

/// One request to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET /v1/blobs/{id}`, the whole blob.
    Get { blob: usize },
    /// `HEAD /v1/blobs/{id}`.
    Head { blob: usize },
    /// `GET /v1/blobs/{id}` with `Range: bytes=start-(start+len-1)`.
    Range { blob: usize, start: u64, len: u64 },
    /// `POST /v1/inference/{model}` with the input file as body.
    Infer,
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Get { .. } => OpKind::Get,
            Op::Head { .. } => OpKind::Head,
            Op::Range { .. } => OpKind::Range,
            Op::Infer => OpKind::Infer,
        }
    }
}

/// The kinds of request, for per-kind counts in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Get,
    Head,
    Range,
    Infer,
}

impl OpKind {
    pub const ALL: [OpKind; 4] = [OpKind::Get, OpKind::Head, OpKind::Range, OpKind::Infer];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Head => "head",
            OpKind::Range => "range",
            OpKind::Infer => "infer",
        }
    }
}

/// Shares of the request mix; what is left after range, HEAD and inference is full reads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Mix {
    pub range: f64,
    pub head: f64,
    pub infer: f64,
}

/// Why a mix is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MixError {
    #[error("range, HEAD and inference shares add up to {0:.3}, more than 100%")]
    TooMuch(f64),
    #[error("an inference share needs --infer MODEL_ID and --input FILE")]
    InferenceWithoutModel,
}

impl Mix {
    pub fn validate(&self, have_inference: bool) -> Result<(), MixError> {
        let total = self.range + self.head + self.infer;
        if total > 1.0 + 1e-9 {
            return Err(MixError::TooMuch(total));
        }
        if self.infer > 0.0 && !have_inference {
            return Err(MixError::InferenceWithoutModel);
        }
        Ok(())
    }
}

/// Draws requests: which blob (Zipf), and what to do with it (the mix).
#[derive(Debug, Clone)]
pub struct Generator {
    zipf: Zipf,
    mix: Mix,
    /// Largest range asked for; ranges are uniform in length `1..=max` and start.
    range_max: u64,
}

impl Generator {
    pub fn new(blobs: usize, zipf_s: f64, mix: Mix, range_max: u64) -> Self {
        Self {
            zipf: Zipf::new(blobs, zipf_s),
            mix,
            range_max: range_max.max(1),
        }
    }

    /// The next request; `size_of(blob)` gives a blob's length (needed for ranges). A range
    /// of an empty blob becomes a full read (no range of it can be satisfied).
    pub fn next(&self, rng: &mut Rng, size_of: impl Fn(usize) -> u64) -> Op {
        let u = rng.unit();
        if u < self.mix.infer {
            return Op::Infer;
        }
        let blob = self.zipf.sample(rng);
        if u < self.mix.infer + self.mix.head {
            return Op::Head { blob };
        }
        if u < self.mix.infer + self.mix.head + self.mix.range {
            let size = size_of(blob);
            if size > 0 {
                return range_in(rng, blob, size, self.range_max);
            }
        }
        Op::Get { blob }
    }
}

/// A range of `blob` (of `size > 0` bytes): length uniform in `1..=min(size, max)`, start
/// uniform among the positions where it fits.
pub fn range_in(rng: &mut Rng, blob: usize, size: u64, max: u64) -> Op {
    let len = 1 + rng.below(size.min(max).max(1));
    let start = rng.below(size - len + 1);
    Op::Range { blob, start, len }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_rank_frequencies_follow_the_law() {
        let n = 100;
        let s = 1.0;
        let zipf = Zipf::new(n, s);
        let harmonic: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
        for k in [0, 1, 9, 99] {
            let expected = 1.0 / ((k + 1) as f64 * harmonic);
            assert!((zipf.probability(k) - expected).abs() < 1e-12, "rank {k}");
        }
        // Empirical frequencies from a seeded generator, within a few standard deviations.
        let mut rng = Rng::new(42);
        let draws = 200_000;
        let mut counts = vec![0u32; n];
        for _ in 0..draws {
            counts[zipf.sample(&mut rng)] += 1;
        }
        for k in [0, 1, 2, 9, 49] {
            let p = zipf.probability(k);
            let expected = p * f64::from(draws);
            let sd = (f64::from(draws) * p * (1.0 - p)).sqrt();
            let got = f64::from(counts[k]);
            assert!(
                (got - expected).abs() < 5.0 * sd,
                "rank {k}: {got} vs {expected}"
            );
        }
        // Rank 1 is twice as popular as rank 2 at s = 1.
        let ratio = f64::from(counts[0]) / f64::from(counts[1]);
        assert!((ratio - 2.0).abs() < 0.1, "{ratio}");
        // Ranks are monotone: more popular first.
        assert!(counts[0] > counts[9] && counts[9] > counts[99]);
    }

    #[test]
    fn zipf_zero_is_uniform_and_rank_covers_every_item() {
        let zipf = Zipf::new(4, 0.0);
        for k in 0..4 {
            assert!((zipf.probability(k) - 0.25).abs() < 1e-12);
        }
        assert_eq!(zipf.rank(0.0), 0);
        assert_eq!(zipf.rank(0.2499), 0);
        assert_eq!(zipf.rank(0.25), 1);
        assert_eq!(zipf.rank(0.9999), 3);
        assert_eq!(zipf.rank(1.0), 3);
        let one = Zipf::new(1, 1.2);
        assert_eq!(one.rank(0.7), 0);
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn mix_shares_are_respected_and_ranges_fit() {
        let mix = Mix {
            range: 0.2,
            head: 0.1,
            infer: 0.05,
        };
        mix.validate(true).unwrap();
        let generator = Generator::new(10, 0.8, mix, 1000);
        let mut rng = Rng::new(7);
        let mut counts = std::collections::BTreeMap::new();
        let draws = 100_000;
        for _ in 0..draws {
            let op = generator.next(&mut rng, |b| 500 + b as u64);
            if let Op::Range { blob, start, len } = op {
                assert!(len >= 1 && start + len <= 500 + blob as u64, "{op:?}");
            }
            *counts.entry(op.kind()).or_insert(0u32) += 1;
        }
        let share = |k| f64::from(counts[&k]) / f64::from(draws);
        assert!((share(OpKind::Range) - 0.2).abs() < 0.01);
        assert!((share(OpKind::Head) - 0.1).abs() < 0.01);
        assert!((share(OpKind::Infer) - 0.05).abs() < 0.01);
        assert!((share(OpKind::Get) - 0.65).abs() < 0.01);
    }

    #[test]
    fn bad_mixes_are_refused() {
        let too_much = Mix {
            range: 0.6,
            head: 0.5,
            infer: 0.0,
        };
        assert!(matches!(
            too_much.validate(false),
            Err(MixError::TooMuch(_))
        ));
        let infer = Mix {
            infer: 0.1,
            ..Mix::default()
        };
        assert_eq!(infer.validate(false), Err(MixError::InferenceWithoutModel));
    }

    #[test]
    fn ranges_of_tiny_and_empty_blobs() {
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let Op::Range { start, len, .. } = range_in(&mut rng, 0, 1, 64) else {
                panic!()
            };
            assert_eq!((start, len), (0, 1));
        }
        let generator = Generator::new(
            1,
            0.0,
            Mix {
                range: 1.0,
                ..Mix::default()
            },
            64,
        );
        assert_eq!(generator.next(&mut rng, |_| 0), Op::Get { blob: 0 });
    }

    proptest::proptest! {
        #[test]
        fn zipf_ranks_stay_in_range_and_grow_with_u(
            n in 1usize..2000,
            s in 0.0f64..3.0,
            a in 0.0f64..1.0,
            b in 0.0f64..1.0,
        ) {
            let zipf = Zipf::new(n, s);
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            proptest::prop_assert!(zipf.rank(hi) < n);
            proptest::prop_assert!(zipf.rank(lo) <= zipf.rank(hi));
        }

        #[test]
        fn ranges_always_fit(size in 1u64..1 << 40, max in 1u64..1 << 30, seed in 0u64..1000) {
            let mut rng = Rng::new(seed);
            let Op::Range { start, len, .. } = range_in(&mut rng, 0, size, max) else {
                unreachable!()
            };
            proptest::prop_assert!(len >= 1 && len <= max && start + len <= size);
        }
    }

    #[test]
    fn the_generator_is_reproducible() {
        let mut a = Rng::new(99);
        let mut b = Rng::new(99);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert!(a.below(0) == 0);
    }
}
