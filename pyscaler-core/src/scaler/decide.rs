//! Whether a trigger's firing starts a run, and with how many nodes: the
//! pause, the bounds, the cooldowns, protection and, for a scale-in, the
//! agreement of every trigger that watches the cluster.

use std::time::Duration;

use tokio::time::Instant;

use super::controls::slot;
use super::Scaler;
use crate::trigger::ClusterView;
use crate::{Direction, Fire, Pipeline, Skip};

/// A run to start: how many nodes it asks for (`None`: the steps' own
/// counts) and which triggers decided.
#[derive(Debug)]
pub(super) struct Go {
    pub(super) nodes: Option<usize>,
    pub(super) triggers: Vec<String>,
}

/// No run, and why.
#[derive(Debug)]
pub(super) struct NoGo {
    pub(super) skip: Skip,
    pub(super) reason: String,
}

fn no(skip: Skip, reason: String) -> NoGo {
    NoGo { skip, reason }
}

impl Scaler {
    /// Decides on `fire` of the trigger bound at `index`.
    pub(super) fn decide(
        &self,
        index: usize,
        fire: &Fire,
        pipeline: &Pipeline,
        last_run: &[Option<Instant>; 2],
        view: &ClusterView,
    ) -> Result<Go, NoGo> {
        let direction = self.watchers[index].1;
        if self.controls.is_paused(direction) {
            return Err(no(Skip::Paused, format!("{direction} is paused")));
        }
        let nodes = match fire.nodes {
            Some(asked) => Some(self.capped(direction, asked)?),
            None => {
                self.fits(direction, pipeline)?;
                None
            }
        };
        self.cooled(direction, last_run)?;
        let triggers = match direction {
            Direction::Out => vec![fire.trigger.clone()],
            Direction::In => self.agreed(index, view)?,
        };
        Ok(Go { nodes, triggers })
    }

    /// The nodes a scale-in may pick: the unprotected ones.
    fn eligible(&self) -> usize {
        self.cluster
            .nodes()
            .iter()
            .filter(|n| !n.is_protected())
            .count()
    }

    /// A step the trigger asked for, capped per decision and by the bounds.
    fn capped(&self, direction: Direction, asked: usize) -> Result<usize, NoGo> {
        let n = self.cluster.len();
        let step = self.max_step[slot(direction)].map_or(asked, |cap| asked.min(cap));
        match direction {
            Direction::Out => {
                let room = self.max_nodes.saturating_sub(n);
                if room == 0 {
                    return Err(self.at_maximum());
                }
                Ok(step.min(room))
            }
            Direction::In => {
                let room = n.saturating_sub(self.min_nodes);
                if room == 0 {
                    return Err(self.at_minimum());
                }
                let eligible = self.eligible();
                if eligible == 0 {
                    return Err(all_protected(n));
                }
                Ok(step.min(room).min(eligible))
            }
        }
    }

    /// A pipeline's own node change, checked against the bounds.
    fn fits(&self, direction: Direction, pipeline: &Pipeline) -> Result<(), NoGo> {
        let n = self.cluster.len();
        let (added, removed) = pipeline.node_change();
        match direction {
            Direction::Out if n >= self.max_nodes => Err(self.at_maximum()),
            Direction::Out if n + added > self.max_nodes => Err(no(
                Skip::AtMaximum,
                format!(
                    "adding {added} nodes to {n} would go past the maximum of {}",
                    self.max_nodes
                ),
            )),
            Direction::In if n <= self.min_nodes => Err(self.at_minimum()),
            Direction::In if n < self.min_nodes + removed => Err(no(
                Skip::AtMinimum,
                format!(
                    "removing {removed} nodes from {n} would go below the minimum of {}",
                    self.min_nodes
                ),
            )),
            Direction::In if self.eligible() < removed.max(1) => Err(all_protected(n)),
            _ => Ok(()),
        }
    }

    fn at_maximum(&self) -> NoGo {
        no(
            Skip::AtMaximum,
            format!("the cluster is at its maximum of {} nodes", self.max_nodes),
        )
    }

    fn at_minimum(&self) -> NoGo {
        no(
            Skip::AtMinimum,
            format!("the cluster is at its minimum of {} nodes", self.min_nodes),
        )
    }

    fn cooled(&self, direction: Direction, last_run: &[Option<Instant>; 2]) -> Result<(), NoGo> {
        let cooldown = self.cooldowns[slot(direction)];
        let Some(last) = last_run[slot(direction)] else {
            return Ok(());
        };
        let since = last.elapsed();
        if since >= cooldown {
            return Ok(());
        }
        Err(no(
            Skip::Cooldown,
            format!(
                "{direction} is cooling down ({} of {} left)",
                humantime::format_duration(Duration::from_secs((cooldown - since).as_secs())),
                humantime::format_duration(cooldown)
            ),
        ))
    }

    /// A scale-in needs every scale-in trigger that has an opinion to breach
    /// and no scale-out trigger to: the safest decision wins. Manual
    /// triggers have no opinion; a trigger without data does not agree.
    fn agreed(&self, index: usize, view: &ClusterView) -> Result<Vec<String>, NoGo> {
        let mut agreed = vec![self.watchers[index].0.clone()];
        for (j, (name, direction)) in self.watchers.iter().enumerate() {
            if j == index {
                continue;
            }
            let Some(opinion) = view.opinion(name) else {
                continue;
            };
            match (direction, opinion.breaching) {
                (Direction::Out, Some(true)) => {
                    return Err(no(
                        Skip::NotAgreed,
                        format!("trigger {name} asks for a scale-out"),
                    ))
                }
                (Direction::Out, _) => {}
                (Direction::In, Some(true)) => agreed.push(name.clone()),
                (Direction::In, Some(false)) => {
                    return Err(no(
                        Skip::NotAgreed,
                        format!("trigger {name} does not agree to a scale-in"),
                    ))
                }
                (Direction::In, None) => {
                    return Err(no(
                        Skip::NotAgreed,
                        format!("trigger {name} has no data, so it does not agree to a scale-in"),
                    ))
                }
            }
        }
        Ok(agreed)
    }
}

fn all_protected(n: usize) -> NoGo {
    no(
        Skip::NoEligibleNode,
        format!("every node of the {n} that a scale-in could pick is protected"),
    )
}
