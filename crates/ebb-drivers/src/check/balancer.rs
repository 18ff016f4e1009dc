//! The `balancer` check: the member's error rate as the balancer itself counts it
//! (`Balancer::member_errors`: HAProxy's `show stat`, the builtin balancer's connect
//! failures and resets), compared with the error rate of the members not yet updated, over
//! the same time. The members still on the old version are the control group: a rate that
//! rises everywhere (a backend outage) does not fail the update; one that rises only on
//! the updated member does.
//!
//! The balancer's counters grow from its start, so the check keeps a reading of the member
//! and of the others when it first runs after the member returned to service (the bake's
//! first round; that attempt passes, saying so), and judges each later attempt by what grew
//! since: the last round judges the whole bake. The readings are kept in memory: a bake
//! resumed by another `ebb` starts from its own first round, as the engine does anyway.
//!
//! The rule: with `m` = the member's errors / requests since then, `o` = the same for the
//! members not yet updated together, and `floor` = `error_floor` (default 0.01), it fails
//! when `m > max_error_ratio * max(o, floor)`. So:
//! - no requests reached the member since then: nothing to judge; it passes, saying so;
//! - the others had no requests, or there are none (the last member): `o` counts as 0,
//!   and the member is held to `max_error_ratio * floor`;
//! - the others had no errors: the same, so a stray error in a thousand requests beside a
//!   clean pool passes, while 5% errors beside it fails (with the defaults, above 2%).

use async_trait::async_trait;
use ebb_config::{Context, Key, Kind};
use ebb_engine::interfaces::{Balancer, Check, CheckContext, Counters, Transport};
use ebb_engine::plan::Member;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The member's error rate against the members not yet updated.
#[derive(Debug)]
pub struct BalancerCheck {
    /// The member's rate may be at most this many times the others'.
    pub max_error_ratio: f64,
    /// Error rates below this count as this (the others' rate, for the comparison).
    pub error_floor: f64,
    /// The readings each member's judgement starts from, by member name.
    baselines: Mutex<HashMap<String, Baseline>>,
}

/// Counters read when a member's judgement began.
#[derive(Debug, Clone)]
struct Baseline {
    /// When the member had returned to service then (a new return starts over).
    returned: Option<SystemTime>,
    member: Counters,
    /// The members not yet updated, by name.
    others: HashMap<String, Counters>,
}

/// `balancer = { max_error_ratio = 2.0 }`.
pub const KIND: super::Descriptor<BalancerCheck> = super::Descriptor {
    name: "balancer",
    value: Kind::Table,
    description: "the member's error rate in the balancer's own counters, against the members not yet updated",
    example: "balancer = { max_error_ratio = 2.0 }",
    keys: KEYS,
    read,
};

const KEYS: &[Key] = &[
    Key::required(
        "max_error_ratio",
        Kind::Number,
        "the member's error rate may be at most this many times that of the members not yet updated",
    ),
    Key::new(
        "error_floor",
        Kind::Number,
        "error rates below this count as this in the comparison (default 0.01, i.e. 1%)",
    ),
];

fn read(cx: &mut Context, key: &str, value: &toml::Value) -> Option<BalancerCheck> {
    let mut t = super::table(cx, key, value, KEYS)?;
    if !t.has("max_error_ratio") {
        t.missing(
            cx,
            "missing key \"max_error_ratio\": how many times the others' error rate the member may have, e.g. max_error_ratio = 2.0",
        );
    }
    let ratio = t.number(cx, "max_error_ratio");
    let floor = t.number(cx, "error_floor").unwrap_or(0.01);
    t.finish(cx);
    if let Some(r) = ratio {
        if r < 1.0 {
            t.error(
                cx,
                "max_error_ratio",
                format!("expected 1 or more (the member may do as well as the others), found {r}"),
            );
        }
    }
    if !(0.0..=1.0).contains(&floor) {
        t.error(
            cx,
            "error_floor",
            format!("expected a rate from 0 to 1 (0.01 is 1%), found {floor}"),
        );
    }
    Some(BalancerCheck {
        max_error_ratio: ratio?,
        error_floor: floor,
        baselines: Mutex::new(HashMap::new()),
    })
}

/// `12 errors in 240 requests (5.00%)`.
fn describe(c: Counters) -> String {
    format!(
        "{} error{} in {} request{} ({})",
        c.errors,
        if c.errors == 1 { "" } else { "s" },
        c.requests,
        if c.requests == 1 { "" } else { "s" },
        percent(rate(c))
    )
}

fn rate(c: Counters) -> f64 {
    if c.requests == 0 {
        0.0
    } else {
        c.errors as f64 / c.requests as f64
    }
}

fn percent(r: f64) -> String {
    format!("{:.2}%", r * 100.0)
}

/// What grew from `before` to `now`; `None` when a counter went down (the balancer
/// restarted and counts from zero again).
fn growth(before: Counters, now: Counters) -> Option<Counters> {
    Some(Counters {
        requests: now.requests.checked_sub(before.requests)?,
        errors: now.errors.checked_sub(before.errors)?,
    })
}

impl BalancerCheck {
    /// Judges the member's growth against the others' (summed), per the module's rule.
    pub fn judge(
        &self,
        member: &str,
        mine: Counters,
        others: Option<Counters>,
    ) -> Result<String, String> {
        let others_text = match others {
            Some(o) => format!("the members not yet updated: {}", describe(o)),
            None => "no member is left to compare with".into(),
        };
        if mine.requests == 0 {
            return Ok(format!(
                "no requests reached \"{member}\" since the first reading; nothing to judge ({others_text})"
            ));
        }
        let theirs = others.map(rate).unwrap_or(0.0);
        let allowed = self.max_error_ratio * theirs.max(self.error_floor);
        let line = format!(
            "\"{member}\": {} since the first reading; {others_text}; allowed {} ({} × max({}, floor {}))",
            describe(mine),
            percent(allowed),
            self.max_error_ratio,
            percent(theirs),
            percent(self.error_floor)
        );
        if rate(mine) > allowed {
            Err(line)
        } else {
            Ok(line)
        }
    }

    async fn read(balancer: &dyn Balancer, m: &Member) -> Result<Counters, String> {
        match balancer.member_errors(m).await {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err(
                "this balancer driver cannot count errors per member (the balancer check needs haproxy or builtin)"
                    .into(),
            ),
            Err(e) => Err(format!(
                "cannot read the balancer's counters of \"{}\": {e}",
                m.name
            )),
        }
    }

    async fn reading(
        balancer: &dyn Balancer,
        member: &Member,
        others: &[Member],
    ) -> Result<(Counters, HashMap<String, Counters>), String> {
        let mine = Self::read(balancer, member).await?;
        let mut theirs = HashMap::new();
        for o in others {
            theirs.insert(o.name.clone(), Self::read(balancer, o).await?);
        }
        Ok((mine, theirs))
    }
}

#[async_trait]
impl Check for BalancerCheck {
    async fn run(
        &self,
        member: &Member,
        _: &dyn Transport,
        ctx: &CheckContext,
        _: Duration,
    ) -> Result<String, String> {
        let balancer = ctx
            .balancer
            .as_ref()
            .ok_or("the balancer check runs only within a run (it reads the balancer)")?;
        let (mine, theirs) = Self::reading(balancer.as_ref(), member, &ctx.not_updated).await?;
        let start = {
            let mut baselines = self.baselines.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = Baseline {
                returned: ctx.returned,
                member: mine,
                others: theirs.clone(),
            };
            match baselines.get(&member.name) {
                Some(b) if b.returned == ctx.returned && growth(b.member, mine).is_some() => {
                    b.clone()
                }
                _ => {
                    baselines.insert(member.name.clone(), fresh);
                    return Ok(format!(
                        "took the balancer's counters of \"{}\" ({}) and of {} member(s) not yet updated; later attempts judge what grows from here",
                        member.name,
                        describe(mine),
                        theirs.len()
                    ));
                }
            }
        };
        let grown = growth(start.member, mine).unwrap_or_default();
        // Only the others read both times (one may have been taken out meanwhile) count.
        let mut sum: Option<Counters> = None;
        for (name, now) in &theirs {
            if let Some(g) = start.others.get(name).and_then(|b| growth(*b, *now)) {
                let s = sum.get_or_insert_with(Counters::default);
                s.requests += g.requests;
                s.errors += g.errors;
            }
        }
        self.judge(&member.name, grown, sum)
    }
    async fn preflight(
        &self,
        balancer: &dyn Balancer,
        driver: &str,
        members: &[Member],
    ) -> Option<String> {
        let m = members.first()?;
        match balancer.member_errors(m).await {
            Ok(None) => Some(format!(
                "the \"{driver}\" balancer driver cannot count errors per member; use haproxy or builtin, or remove the check"
            )),
            // A balancer that cannot be read is reported by ebb check on its own.
            _ => None,
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(requests: u64, errors: u64) -> Counters {
        Counters { requests, errors }
    }

    #[test]
    fn the_rule_and_its_zero_cases() {
        let check = BalancerCheck {
            max_error_ratio: 2.0,
            error_floor: 0.01,
            baselines: Mutex::new(HashMap::new()),
        };
        // 5% beside a clean pool fails; the message gives both figures and the bound.
        let e = check.judge("m1", c(200, 10), Some(c(800, 0))).unwrap_err();
        assert!(
            e.contains("10 errors in 200 requests (5.00%)")
                && e.contains("0 errors in 800")
                && e.contains("allowed 2.00%"),
            "{e}"
        );
        // A stray error beside a clean pool passes.
        assert!(check.judge("m1", c(1000, 1), Some(c(1000, 0))).is_ok());
        // Errors everywhere: compared with the others.
        assert!(check.judge("m1", c(100, 10), Some(c(100, 8))).is_ok());
        assert!(check.judge("m1", c(100, 30), Some(c(100, 8))).is_err());
        // No requests to the member: nothing to judge.
        assert!(check.judge("m1", c(0, 0), Some(c(100, 0))).is_ok());
        // Nobody left to compare with: held to ratio × floor.
        assert!(check.judge("m1", c(100, 1), None).is_ok());
        assert!(check.judge("m1", c(100, 3), None).is_err());
        assert_eq!(growth(c(10, 1), c(5, 0)), None);
    }
}
