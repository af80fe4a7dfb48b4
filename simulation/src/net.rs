//! The simulated network: per-link latency with jitter and a long tail (which reorders messages), loss,
//! duplication, and partition episodes (symmetric, one-way, flapping links). Node *slots* are indices into
//! the simulation's node table; a slot's address never moves to another node.

use rand::rngs::StdRng;
use rand::Rng;

/// How a partition episode blocks links while it is active.
#[derive(Debug, Clone)]
pub enum Block {
    /// Nodes in different groups cannot talk, either way.
    Symmetric { group: Vec<u8> },
    /// Messages from a node in `from` to a node in `to` are lost; the reverse direction works.
    OneWay { from: Vec<bool>, to: Vec<bool> },
    /// The link between `a` and `b` alternates down and up every `period_ms` (one way only unless `both`).
    Flapping {
        a: usize,
        b: usize,
        period_ms: u64,
        both: bool,
    },
}

/// A partition active over `[start_ms, end_ms)` of simulated time.
#[derive(Debug, Clone)]
pub struct Episode {
    pub start_ms: u64,
    pub end_ms: u64,
    pub block: Block,
}

impl Episode {
    fn blocks(&self, from: usize, to: usize, now_ms: u64) -> bool {
        if now_ms < self.start_ms || now_ms >= self.end_ms {
            return false;
        }
        match &self.block {
            Block::Symmetric { group } => group.get(from) != group.get(to),
            Block::OneWay { from: f, to: t } => {
                f.get(from).copied().unwrap_or(false) && t.get(to).copied().unwrap_or(false)
            }
            Block::Flapping { a, b, period_ms, both } => {
                let on_link = (from == *a && to == *b) || (*both && from == *b && to == *a);
                on_link && ((now_ms - self.start_ms) / period_ms).is_multiple_of(2)
            }
        }
    }

    /// A one-line description for reports.
    pub fn describe(&self) -> String {
        let what = match &self.block {
            Block::Symmetric { group } => {
                let mut groups: Vec<Vec<usize>> = Vec::new();
                for (slot, g) in group.iter().enumerate() {
                    let g = *g as usize;
                    if groups.len() <= g {
                        groups.resize(g + 1, Vec::new());
                    }
                    groups[g].push(slot);
                }
                format!("symmetric partition {groups:?}")
            }
            Block::OneWay { from, to } => {
                let f: Vec<usize> = (0..from.len()).filter(|&i| from[i]).collect();
                let t: Vec<usize> = (0..to.len()).filter(|&i| to[i]).collect();
                format!("one-way partition {f:?} -> {t:?} lost")
            }
            Block::Flapping { a, b, period_ms, both } => {
                let arrow = if *both { "<->" } else { "->" };
                format!("flapping link n{a}{arrow}n{b} every {period_ms} ms")
            }
        };
        format!(
            "{:.1}s..{:.1}s {what}",
            self.start_ms as f64 / 1e3,
            self.end_ms as f64 / 1e3
        )
    }
}

/// Network parameters drawn for one run.
#[derive(Debug, Clone)]
pub struct NetParams {
    pub loss: f64,
    pub dup: f64,
    pub jitter_ms: u64,
    pub tail: f64,
}

/// The network of one run. All randomness comes from its own seeded generator.
pub struct Network {
    params: NetParams,
    slots: usize,
    /// Base latency of each directed link, `from * slots + to`.
    base_ms: Vec<u64>,
    pub episodes: Vec<Episode>,
    /// After healing: no partitions, no loss, no duplication (latency and jitter stay).
    pub healed: bool,
    rng: StdRng,
}

impl Network {
    /// A network between `slots` node slots.
    pub fn new(params: NetParams, slots: usize, latency_ms: (u64, u64), mut rng: StdRng) -> Network {
        let base_ms = (0..slots * slots)
            .map(|_| rng.gen_range(latency_ms.0..=latency_ms.1))
            .collect();
        Network {
            params,
            slots,
            base_ms,
            episodes: Vec::new(),
            healed: false,
            rng,
        }
    }

    /// Whether `from -> to` is cut at `now_ms`.
    pub fn blocked(&self, from: usize, to: usize, now_ms: u64) -> bool {
        !self.healed && self.episodes.iter().any(|e| e.blocks(from, to, now_ms))
    }

    /// Send a message at `now_ms`: the delivery times of its copies (none if it is lost).
    pub fn send(&mut self, from: usize, to: usize, now_ms: u64) -> Vec<u64> {
        if self.blocked(from, to, now_ms) {
            return Vec::new();
        }
        if !self.healed && self.rng.gen_bool(self.params.loss) {
            return Vec::new();
        }
        let mut copies = vec![now_ms + self.latency(from, to)];
        if !self.healed && self.rng.gen_bool(self.params.dup) {
            copies.push(now_ms + self.latency(from, to));
        }
        copies
    }

    fn latency(&mut self, from: usize, to: usize) -> u64 {
        let base = self.base_ms[from * self.slots + to];
        let u: f64 = self.rng.gen();
        let jitter = (-(1.0 - u).ln() * self.params.jitter_ms as f64) as u64;
        let tail = if self.rng.gen_bool(self.params.tail) {
            self.rng.gen_range(100..2_000)
        } else {
            0
        };
        base + jitter + tail
    }
}
