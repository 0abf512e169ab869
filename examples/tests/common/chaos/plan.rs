//! What the campaign does to a cycle: faults drawn from a seed, so the same
//! seed replays the same plan (the timing of what they hit still varies
//! with the machine, as it does on AWS).

use std::fmt;

/// A small seeded generator (SplitMix64): the plan must not change with a
/// crate's version, and needs nothing more.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `percent` in 100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub(crate) fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// The AWS calls a scale-out or a scale-in makes, any of which may throttle
/// or fail.
const AWS_CALLS: &[&str] = &[
    "RunInstances",
    "DescribeInstances",
    "CreateTags",
    "DescribeSubnets",
    "RegisterTargets",
    "DescribeTargetHealth",
    "RegisterInstancesWithLoadBalancer",
    "DescribeInstanceHealth",
    "DeregisterTargets",
    "DeregisterInstancesFromLoadBalancer",
    "TerminateInstances",
];

/// The DynamoDB calls of the journal and the lease.
const DYNAMO_CALLS: &[&str] = &["PutItem", "UpdateItem", "Query", "GetItem"];

/// One fault, armed before a phase and cleared after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `RequestLimitExceeded` on the next `times` calls of `action`.
    Throttle { action: &'static str, times: usize },
    /// A bare HTTP `status` (500 or 503) on the next `times` calls of `action`.
    ServerError {
        action: &'static str,
        status: u16,
        times: usize,
    },
    /// The call takes effect and its answer is lost (a 503 after moto ran it).
    LostAnswer { action: &'static str },
    /// `InsufficientInstanceCapacity` for every launch in the first or second zone.
    NoCapacity { zone: u8 },
    /// `ProvisionedThroughputExceededException` on the next `times` calls.
    DynamoThrottle { action: &'static str, times: usize },
    /// A node's sshd stopped `after_ms` into the phase (the new node's, or an old one's).
    SshdStopped { new_node: bool, after_ms: u64 },
    /// Every process of a node paused (SIGSTOP) past the step timeout.
    NodePaused { new_node: bool, after_ms: u64 },
    /// The new node's Puppet run fails.
    PuppetFails,
    /// The configuration script fails.
    ScriptFails,
    /// The application starts and never answers.
    NeverHealthy,
    /// Nothing listens where the mail goes.
    SmtpDown,
}

impl Fault {
    /// The kind, as the campaign's table counts it.
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Self::Throttle { .. } => "aws throttled",
            Self::ServerError { .. } => "aws 500/503",
            Self::LostAnswer { .. } => "aws answer lost",
            Self::NoCapacity { .. } => "no capacity in a zone",
            Self::DynamoThrottle { .. } => "dynamodb throttled",
            Self::SshdStopped { .. } => "sshd stopped",
            Self::NodePaused { .. } => "node paused (SIGSTOP)",
            Self::PuppetFails => "puppet fails",
            Self::ScriptFails => "script fails",
            Self::NeverHealthy => "app never healthy",
            Self::SmtpDown => "smtp down",
        }
    }

    /// Whether it acts on a node's processes (one such fault a phase).
    pub(crate) fn is_node_fault(self) -> bool {
        matches!(self, Self::SshdStopped { .. } | Self::NodePaused { .. })
    }
}

/// What happens to one run (a scale-out or a scale-in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Phase {
    pub(crate) faults: Vec<Fault>,
    /// The controller is killed (SIGKILL) this long after it started.
    pub(crate) kill_after_ms: Option<u64>,
    /// The restarted controller resumes (`recover --resume`) instead of undoing.
    pub(crate) resume: bool,
}

/// One cycle: maybe a watch while Prometheus is down, a scale-out, a scale-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cycle {
    pub(crate) seed: u64,
    pub(crate) number: u32,
    /// A watch runs first, with nothing answering at Prometheus' address:
    /// it must not scale.
    pub(crate) prometheus_down: bool,
    pub(crate) scale_out: Phase,
    pub(crate) scale_in: Phase,
}

impl Cycle {
    /// The plan of cycle `number` of the campaign seeded `seed`: the same
    /// pair always draws the same plan, whatever ran before it.
    pub(crate) fn draw(seed: u64, number: u32) -> Self {
        let mut rng = Rng::new(seed ^ (u64::from(number) << 32) ^ 0x5EED);
        let prometheus_down = rng.chance(10);
        let scale_out = draw_phase(&mut rng, true);
        let scale_in = draw_phase(&mut rng, false);
        Self {
            seed,
            number,
            prometheus_down,
            scale_out,
            scale_in,
        }
    }

    /// Every fault of the cycle.
    pub(crate) fn faults(&self) -> impl Iterator<Item = Fault> + '_ {
        self.scale_out
            .faults
            .iter()
            .chain(self.scale_in.faults.iter())
            .copied()
    }
}

fn draw_phase(rng: &mut Rng, scale_out: bool) -> Phase {
    let mut faults: Vec<Fault> = Vec::new();
    // Up to three faults; a quarter of the phases run clean.
    let n = [0, 1, 1, 2, 2, 3][rng.below(6) as usize];
    for _ in 0..n {
        let fault = draw_fault(rng, scale_out);
        if fault.is_node_fault() && faults.iter().any(|f| f.is_node_fault()) {
            continue;
        }
        if !faults.contains(&fault) {
            faults.push(fault);
        }
    }
    let kill = rng.chance(if scale_out { 30 } else { 20 });
    Phase {
        faults,
        kill_after_ms: kill.then(|| 300 + rng.below(if scale_out { 9_000 } else { 3_000 })),
        resume: rng.chance(40),
    }
}

fn draw_fault(rng: &mut Rng, scale_out: bool) -> Fault {
    let kinds: u64 = if scale_out { 11 } else { 7 };
    let times = 1 + rng.below(3) as usize;
    match rng.below(kinds) {
        0 => Fault::Throttle {
            action: rng.pick(AWS_CALLS),
            times,
        },
        1 => Fault::ServerError {
            action: rng.pick(AWS_CALLS),
            status: rng.pick(&[500, 503]),
            times,
        },
        2 => Fault::DynamoThrottle {
            action: rng.pick(DYNAMO_CALLS),
            times,
        },
        3 => Fault::SshdStopped {
            new_node: scale_out && rng.chance(60),
            after_ms: rng.below(if scale_out { 6_000 } else { 1_500 }),
        },
        4 => Fault::NodePaused {
            new_node: scale_out && rng.chance(60),
            after_ms: rng.below(if scale_out { 6_000 } else { 1_500 }),
        },
        5 => Fault::SmtpDown,
        6 => Fault::LostAnswer {
            action: if scale_out {
                rng.pick(&["RunInstances", "RegisterTargets"])
            } else {
                rng.pick(&["DeregisterTargets", "TerminateInstances"])
            },
        },
        7 => Fault::NoCapacity {
            zone: rng.below(2) as u8,
        },
        8 => Fault::PuppetFails,
        9 => Fault::ScriptFails,
        _ => Fault::NeverHealthy,
    }
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} cycle {}: prometheus down first: {}; scale-out {:?}; scale-in {:?}",
            self.seed, self.number, self.prometheus_down, self.scale_out, self.scale_in
        )
    }
}

#[test]
fn the_same_seed_draws_the_same_plan() {
    for n in 0..50 {
        assert_eq!(Cycle::draw(7, n), Cycle::draw(7, n));
    }
    let differ = (0..50)
        .filter(|&n| Cycle::draw(7, n) != Cycle::draw(8, n))
        .count();
    assert!(
        differ > 40,
        "other seeds draw other plans ({differ} of 50 differ)"
    );
}
