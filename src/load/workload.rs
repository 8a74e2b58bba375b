//! The workloads a planner mixes, and what each one sends.
//!
//! - `checkout`: reserve 1-5 lines across SKUs and nodes, then commit 70%,
//!   release 15%, abandon 15% (the hold stays until it expires).
//! - `flash-sale`: every client hammers a few hot SKUs with limited stock
//!   at one node: the oversell stress case. Commit 80%, release 10%,
//!   abandon 10%.
//! - `pos`: a point-of-sale sale of 1-2 units at a node.
//! - `browse`: availability of 1-3 SKUs, 80% LOCAL, 20% LINEARIZABLE.
//! - `restock`: a receipt (+1 to +20) 90% of the time, else a cycle count
//!   set with compare-and-set against a value just read.
//! - `reserve`: a bare reservation of 1 unit of one SKU at one node, left
//!   open (the unit of the Redis and PostgreSQL comparisons).
//!
//! SKU popularity follows a Zipf distribution with exponent `--zipf`.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand_distr::{Distribution, Zipf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    Checkout,
    FlashSale,
    Pos,
    Browse,
    Restock,
    Reserve,
}

impl Workload {
    pub const ALL: [Workload; 6] = [
        Workload::Checkout,
        Workload::FlashSale,
        Workload::Pos,
        Workload::Browse,
        Workload::Restock,
        Workload::Reserve,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Checkout => "checkout",
            Workload::FlashSale => "flash-sale",
            Workload::Pos => "pos",
            Workload::Browse => "browse",
            Workload::Restock => "restock",
            Workload::Reserve => "reserve",
        }
    }
}

impl Workload {
    /// The calls this workload makes, by the names their latency is
    /// recorded under.
    pub fn calls(self) -> &'static [&'static str] {
        match self {
            Workload::Checkout | Workload::FlashSale => &["reserve", "commit", "release"],
            Workload::Reserve => &["reserve"],
            Workload::Pos => &["sell"],
            Workload::Browse => &["availability_local", "availability_linearizable"],
            Workload::Restock => &["adjust", "availability_linearizable", "set_on_hand"],
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Workload, String> {
        for w in Workload::ALL {
            if w.name() == s {
                return Ok(w);
            }
        }
        Err(format!(
            "unknown workload {s:?}; choose from checkout, flash-sale, pos, browse, restock, reserve"
        ))
    }
}

/// Parses `checkout=70,browse=30` (a name alone weighs 1).
pub fn parse_mix(text: &str) -> Result<Vec<(Workload, u32)>, String> {
    let mut mix = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, weight) = match item.split_once('=') {
            Some((n, w)) => (
                n.trim(),
                w.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("weight of {n:?} must be a whole number, got {w:?}"))?,
            ),
            None => (item, 1),
        };
        let workload: Workload = name.parse()?;
        if mix.iter().any(|(w, _)| *w == workload) {
            return Err(format!("workload {name} is listed twice"));
        }
        mix.push((workload, weight));
    }
    let total: u64 = mix.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return Err("the workload mix needs a positive weight".into());
    }
    Ok(mix)
}

/// Picks workloads by weight and SKUs by popularity.
#[derive(Debug, Clone)]
pub(crate) struct Chooser {
    mix: Vec<(Workload, u32)>,
    total: u32,
    zipf: Zipf<f64>,
    pub(crate) skus: usize,
    pub(crate) nodes: usize,
    pub(crate) hot_skus: usize,
}

impl Chooser {
    pub(crate) fn new(
        mix: Vec<(Workload, u32)>,
        skus: usize,
        nodes: usize,
        hot_skus: usize,
        exponent: f64,
    ) -> Result<Chooser, String> {
        let total = mix.iter().map(|(_, w)| *w).sum();
        let zipf =
            Zipf::new(skus as f64, exponent).map_err(|e| format!("--zipf {exponent}: {e}"))?;
        Ok(Chooser {
            mix,
            total,
            zipf,
            skus,
            nodes,
            hot_skus,
        })
    }

    pub(crate) fn workload(&self, rng: &mut impl Rng) -> Workload {
        let mut pick = rng.random_range(0..self.total);
        for (w, weight) in &self.mix {
            if pick < *weight {
                return *w;
            }
            pick -= weight;
        }
        self.mix[0].0
    }

    /// A SKU index, the most popular first (Zipf ranks start at 1).
    pub(crate) fn sku(&self, rng: &mut impl Rng) -> usize {
        let rank = self.zipf.sample(rng) as usize;
        rank.clamp(1, self.skus) - 1
    }

    pub(crate) fn node(&self, rng: &mut impl Rng) -> usize {
        rng.random_range(0..self.nodes)
    }
}

pub(crate) fn sku_name(i: usize) -> String {
    numbered("SKU-", i, 6)
}

pub(crate) fn node_name(i: usize) -> String {
    numbered("node-", i, 3)
}

pub(crate) fn hot_sku_name(i: usize) -> String {
    numbered("FLASH-", i, 2)
}

/// `prefix` then `i` in decimal, zero-padded to `width` digits: what
/// `format!("{prefix}{i:0width$}")` writes, without the formatting
/// machinery (a worker names a counter or two per call, and `format!`
/// was a few percent of the harness's CPU).
fn numbered(prefix: &str, i: usize, width: usize) -> String {
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut rest = i;
    loop {
        digits[len] = b'0' + (rest % 10) as u8;
        len += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut name = String::with_capacity(prefix.len() + len.max(width));
    name.push_str(prefix);
    for _ in len..width {
        name.push('0');
    }
    for d in digits[..len].iter().rev() {
        name.push(char::from(*d));
    }
    name
}

/// The node flash-sale stock sits at.
pub(crate) const HOT_NODE: &str = "online";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse() {
        assert_eq!(
            parse_mix("checkout=70,browse=30").unwrap(),
            vec![(Workload::Checkout, 70), (Workload::Browse, 30)]
        );
        assert_eq!(parse_mix("pos").unwrap(), vec![(Workload::Pos, 1)]);
        assert!(parse_mix("nope").is_err());
        assert!(parse_mix("pos=0").is_err());
        assert!(parse_mix("pos,pos").is_err());
        assert!(parse_mix("pos=x").is_err());
    }

    #[test]
    fn names_are_what_format_writes() {
        for i in [
            0,
            1,
            9,
            10,
            99,
            100,
            999,
            1_000,
            123_456,
            999_999,
            1_000_000,
            usize::MAX,
        ] {
            assert_eq!(sku_name(i), format!("SKU-{i:06}"));
            assert_eq!(node_name(i), format!("node-{i:03}"));
            assert_eq!(hot_sku_name(i), format!("FLASH-{i:02}"));
        }
    }

    #[test]
    fn zipf_favours_the_first_skus() {
        let chooser = Chooser::new(vec![(Workload::Pos, 1)], 1_000, 1, 1, 1.1).unwrap();
        let mut rng = rand::rng();
        let mut first_ten = 0;
        for _ in 0..10_000 {
            let sku = chooser.sku(&mut rng);
            assert!(sku < 1_000);
            if sku < 10 {
                first_ten += 1;
            }
        }
        // Under Zipf(1.1) over 1,000 ranks the top 10 draw about 45%.
        assert!(first_ten > 3_000, "{first_ten}");
    }
}
