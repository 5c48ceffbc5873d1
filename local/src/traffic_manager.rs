//! Azure Traffic Manager's decisions, as a state machine on a clock the
//! caller gives: endpoint monitoring, the routing methods, and the DNS TTL
//! a client honours. The front door of a local matrix drives it with the
//! real clock; tests drive it with a virtual one.
//!
//! Written from Traffic Manager's documentation ("Traffic Manager endpoint
//! monitoring", "Traffic Manager routing methods"), since there is no
//! emulator of it:
//!
//! - **Monitoring.** A probe of each endpoint's health path every
//!   *interval*; a probe that fails or gets no answer within *timeout* is a
//!   failure. An endpoint is `Degraded` once its consecutive failures are
//!   more than the *tolerated number of failures*, and `Online` again on
//!   its next successful probe. A newly enabled endpoint is
//!   `CheckingEndpoint` until its first probe answers, and is given
//!   traffic meanwhile. A `Disabled` endpoint is never given traffic.
//!   Traffic Manager's settings: interval 30 s (or 10 s, "fast probing"),
//!   timeout 5–10 s (5–9 s with fast probing), 0–9 tolerated failures;
//!   defaults 30 s, 10 s, 3.
//! - **Fail open.** When every enabled endpoint is degraded, Traffic
//!   Manager answers as if all were healthy rather than answering nothing.
//! - **Routing.** Priority: the healthy endpoint of the lowest priority
//!   number. Weighted: a healthy endpoint at random, in proportion to its
//!   weight (1–1 000). Performance: the healthy endpoint of the lowest
//!   measured latency.
//! - **DNS TTL.** A client keeps the endpoint it was given for the TTL of
//!   the answer, healthy or not: the part of a failover no monitoring can
//!   shorten. The longest a client can be sent to a dead endpoint is
//!   therefore `(interval + timeout) × (tolerated + 1) + TTL`.
//!
//! Not modelled: probing from many regions (Traffic Manager counts
//! failures per region), nested profiles, and the geographic, multivalue
//! and subnet methods.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Monitoring settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Time between two probes of an endpoint.
    pub interval: Duration,
    /// Time a probe waits for an answer.
    pub timeout: Duration,
    /// Consecutive failures tolerated before an endpoint is degraded.
    pub tolerated: u32,
}

impl ProbeSettings {
    /// Traffic Manager's defaults: 30 s, 10 s, 3.
    pub const TRAFFIC_MANAGER: Self = Self {
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(10),
        tolerated: 3,
    };

    /// Traffic Manager's fast probing with its longest timeout: 10 s, 9 s, 3.
    pub const FAST_PROBING: Self = Self {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(9),
        tolerated: 3,
    };

    /// A local matrix's defaults: 1 s, 0.5 s, 2.
    pub const LOCAL: Self = Self {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        tolerated: 2,
    };

    /// Checks the settings: a timeout shorter than the interval, and at
    /// most 9 tolerated failures, as Traffic Manager requires (shorter
    /// times than its own are allowed: a local run is faster).
    ///
    /// # Errors
    /// What is wrong.
    pub fn check(self) -> Result<Self, String> {
        if self.interval.is_zero() || self.timeout.is_zero() {
            return Err("the probe interval and timeout must be above zero".to_owned());
        }
        if self.timeout >= self.interval {
            return Err(format!(
                "the probe timeout ({:?}) must be shorter than the interval ({:?})",
                self.timeout, self.interval
            ));
        }
        if self.tolerated > 9 {
            return Err(format!(
                "at most 9 tolerated failures (Traffic Manager's limit), not {}",
                self.tolerated
            ));
        }
        Ok(self)
    }

    /// The longest an endpoint that stops answering keeps getting new
    /// clients: every probe of the `tolerated + 1` it takes to degrade
    /// waits out its timeout, one interval apart, and the first may have
    /// just passed.
    #[must_use]
    pub fn detection_bound(self) -> Duration {
        (self.interval + self.timeout) * (self.tolerated + 1)
    }
}

/// An endpoint's monitor status, named as Traffic Manager names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MonitorStatus {
    /// Enabled, first probe not answered yet; given traffic.
    CheckingEndpoint,
    /// Its probes succeed.
    Online,
    /// More consecutive probe failures than tolerated.
    Degraded,
    /// Switched off by an operator; never given traffic.
    Disabled,
}

impl MonitorStatus {
    /// The name Traffic Manager shows.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CheckingEndpoint => "CheckingEndpoint",
            Self::Online => "Online",
            Self::Degraded => "Degraded",
            Self::Disabled => "Disabled",
        }
    }
}

/// How endpoints are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingMethod {
    /// The healthy endpoint with the lowest priority number.
    Priority,
    /// A healthy endpoint at random, in proportion to its weight.
    Weighted,
    /// The healthy endpoint with the lowest measured latency.
    Performance,
}

/// One endpoint (a cell) as the monitor knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its name.
    pub name: String,
    /// 1 is tried first (priority routing).
    pub priority: u32,
    /// 1–1 000 (weighted routing).
    pub weight: u32,
    /// Where it stands.
    pub status: MonitorStatus,
    /// Consecutive failed probes.
    pub failures: u32,
    /// The latency of its last successful probe (performance routing).
    pub latency: Option<Duration>,
}

/// Why a setting of an endpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// No endpoint of that name.
    #[error("no endpoint {0}")]
    Unknown(String),
    /// A weight outside 1–1 000.
    #[error("weight {0} is outside 1 to 1000")]
    Weight(u32),
}

/// The monitor and router of a set of endpoints.
#[derive(Debug, Clone)]
pub struct TrafficManager {
    settings: ProbeSettings,
    method: RoutingMethod,
    endpoints: BTreeMap<String, Endpoint>,
}

impl TrafficManager {
    /// A profile over `endpoints` (`(name, priority, weight)`), each
    /// enabled and `CheckingEndpoint`.
    ///
    /// # Errors
    /// A weight outside 1–1 000.
    pub fn new(
        settings: ProbeSettings,
        method: RoutingMethod,
        endpoints: &[(&str, u32, u32)],
    ) -> Result<Self, EndpointError> {
        let mut all = BTreeMap::new();
        for (name, priority, weight) in endpoints {
            check_weight(*weight)?;
            all.insert(
                (*name).to_owned(),
                Endpoint {
                    name: (*name).to_owned(),
                    priority: *priority,
                    weight: *weight,
                    status: MonitorStatus::CheckingEndpoint,
                    failures: 0,
                    latency: None,
                },
            );
        }
        Ok(Self {
            settings,
            method,
            endpoints: all,
        })
    }

    /// The monitoring settings.
    #[must_use]
    pub fn settings(&self) -> ProbeSettings {
        self.settings
    }

    /// The routing method.
    #[must_use]
    pub fn method(&self) -> RoutingMethod {
        self.method
    }

    /// Every endpoint, by name.
    #[must_use]
    pub fn endpoints(&self) -> &BTreeMap<String, Endpoint> {
        &self.endpoints
    }

    fn endpoint(&mut self, name: &str) -> Result<&mut Endpoint, EndpointError> {
        self.endpoints
            .get_mut(name)
            .ok_or_else(|| EndpointError::Unknown(name.to_owned()))
    }

    /// A probe of `name` answered in time with success (`Some(latency)`),
    /// or failed or timed out (`None`).
    ///
    /// # Errors
    /// An unknown endpoint.
    pub fn probed(&mut self, name: &str, answer: Option<Duration>) -> Result<(), EndpointError> {
        let tolerated = self.settings.tolerated;
        let e = self.endpoint(name)?;
        if e.status == MonitorStatus::Disabled {
            return Ok(());
        }
        match answer {
            Some(latency) => {
                e.failures = 0;
                e.latency = Some(latency);
                e.status = MonitorStatus::Online;
            }
            None => {
                e.failures = e.failures.saturating_add(1);
                if e.failures > tolerated {
                    e.status = MonitorStatus::Degraded;
                }
            }
        }
        Ok(())
    }

    /// Disables (`false`) or enables (`true`) an endpoint; an enabled one
    /// starts over as `CheckingEndpoint`.
    ///
    /// # Errors
    /// An unknown endpoint.
    pub fn set_enabled(&mut self, name: &str, enabled: bool) -> Result<(), EndpointError> {
        let e = self.endpoint(name)?;
        if enabled {
            if e.status == MonitorStatus::Disabled {
                e.status = MonitorStatus::CheckingEndpoint;
                e.failures = 0;
            }
        } else {
            e.status = MonitorStatus::Disabled;
        }
        Ok(())
    }

    /// Changes an endpoint's weight.
    ///
    /// # Errors
    /// An unknown endpoint, or a weight outside 1–1 000.
    pub fn set_weight(&mut self, name: &str, weight: u32) -> Result<(), EndpointError> {
        check_weight(weight)?;
        self.endpoint(name)?.weight = weight;
        Ok(())
    }

    /// The endpoints an answer may name: the enabled healthy ones
    /// (`Online`, `CheckingEndpoint`), or, when every enabled one is
    /// degraded, all of them (fail open).
    #[must_use]
    pub fn candidates(&self) -> Vec<&Endpoint> {
        let enabled: Vec<&Endpoint> = self
            .endpoints
            .values()
            .filter(|e| e.status != MonitorStatus::Disabled)
            .collect();
        let healthy: Vec<&Endpoint> = enabled
            .iter()
            .copied()
            .filter(|e| e.status != MonitorStatus::Degraded)
            .collect();
        if healthy.is_empty() { enabled } else { healthy }
    }

    /// The endpoint an answer names now; `roll` is a uniform random number
    /// (weighted routing). `None` only when every endpoint is disabled.
    #[must_use]
    pub fn route(&self, roll: u64) -> Option<&Endpoint> {
        let candidates = self.candidates();
        match self.method {
            RoutingMethod::Priority => candidates
                .into_iter()
                .min_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name))),
            RoutingMethod::Performance => candidates.into_iter().min_by(|a, b| {
                (a.latency.is_none(), a.latency, &a.name).cmp(&(
                    b.latency.is_none(),
                    b.latency,
                    &b.name,
                ))
            }),
            RoutingMethod::Weighted => {
                let total: u64 = candidates.iter().map(|e| u64::from(e.weight)).sum();
                if total == 0 {
                    return None;
                }
                let mut point = roll % total;
                candidates.into_iter().find(|e| {
                    let w = u64::from(e.weight);
                    if point < w {
                        true
                    } else {
                        point -= w;
                        false
                    }
                })
            }
        }
    }
}

fn check_weight(weight: u32) -> Result<(), EndpointError> {
    if (1..=1_000).contains(&weight) {
        Ok(())
    } else {
        Err(EndpointError::Weight(weight))
    }
}

/// What clients remember of DNS answers: the endpoint each was given, for
/// the TTL of the answer. A client is whatever the front door identifies
/// it by (a connection, a header).
#[derive(Debug, Clone, Default)]
pub struct DnsCache {
    ttl: Duration,
    answers: HashMap<String, (String, Duration)>,
}

impl DnsCache {
    /// Answers kept for `ttl` (0: every request is a new lookup).
    #[must_use]
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            answers: HashMap::new(),
        }
    }

    /// How long a client keeps an answer.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The endpoint `client` uses at `now` (time since any fixed start):
    /// the one it was given while that answer's TTL lasts, else a new
    /// answer from `manager`.
    pub fn resolve(
        &mut self,
        client: &str,
        now: Duration,
        manager: &TrafficManager,
        roll: u64,
    ) -> Option<String> {
        if let Some((endpoint, expires)) = self.answers.get(client)
            && now < *expires
        {
            return Some(endpoint.clone());
        }
        let endpoint = manager.route(roll)?.name.clone();
        if !self.ttl.is_zero() {
            self.answers
                .insert(client.to_owned(), (endpoint.clone(), now + self.ttl));
        }
        Some(endpoint)
    }

    /// Forgets answers that expired by `now` (bounds the memory).
    pub fn expire(&mut self, now: Duration) {
        self.answers.retain(|_, (_, expires)| now < *expires);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::rng::Rng;

    fn two(method: RoutingMethod, settings: ProbeSettings) -> TrafficManager {
        TrafficManager::new(settings, method, &[("aws", 1, 500), ("azure", 2, 500)]).unwrap()
    }

    fn status(tm: &TrafficManager, name: &str) -> MonitorStatus {
        tm.endpoints()[name].status
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_endpoint_degrades_after_more_failures_than_tolerated_and_recovers_on_one_success() {
        let mut tm = two(RoutingMethod::Priority, ProbeSettings::LOCAL);
        assert_eq!(status(&tm, "aws"), MonitorStatus::CheckingEndpoint);
        tm.probed("aws", Some(3 * MS)).unwrap();
        assert_eq!(status(&tm, "aws"), MonitorStatus::Online);
        // Tolerated: 2.
        for _ in 0..2 {
            tm.probed("aws", None).unwrap();
            assert_eq!(status(&tm, "aws"), MonitorStatus::Online);
        }
        tm.probed("aws", None).unwrap();
        assert_eq!(status(&tm, "aws"), MonitorStatus::Degraded);
        // A success in between starts the count over.
        tm.probed("aws", Some(MS)).unwrap();
        assert_eq!(status(&tm, "aws"), MonitorStatus::Online);
        tm.probed("aws", None).unwrap();
        tm.probed("aws", None).unwrap();
        tm.probed("aws", Some(MS)).unwrap();
        tm.probed("aws", None).unwrap();
        assert_eq!(status(&tm, "aws"), MonitorStatus::Online);
    }

    #[test]
    fn priority_sends_everyone_to_the_first_healthy_endpoint_and_fails_open_when_none_is() {
        let mut tm = two(RoutingMethod::Priority, ProbeSettings::LOCAL);
        // Checking endpoints get traffic.
        assert_eq!(tm.route(0).unwrap().name, "aws");
        for _ in 0..3 {
            tm.probed("aws", None).unwrap();
        }
        assert_eq!(tm.route(0).unwrap().name, "azure");
        for _ in 0..3 {
            tm.probed("azure", None).unwrap();
        }
        // Every endpoint degraded: all are answered, as if healthy.
        assert_eq!(tm.candidates().len(), 2);
        assert_eq!(tm.route(0).unwrap().name, "aws");
        // A disabled endpoint never is, even then.
        tm.set_enabled("aws", false).unwrap();
        assert_eq!(tm.candidates().len(), 1);
        assert_eq!(tm.route(0).unwrap().name, "azure");
        tm.set_enabled("azure", false).unwrap();
        assert!(tm.route(0).is_none());
        // Enabled again: checking, and given traffic.
        tm.set_enabled("aws", true).unwrap();
        assert_eq!(status(&tm, "aws"), MonitorStatus::CheckingEndpoint);
        assert_eq!(tm.route(0).unwrap().name, "aws");
    }

    #[test]
    fn weighted_routing_follows_the_weights_within_two_points_over_twenty_thousand_answers() {
        let mut tm = two(RoutingMethod::Weighted, ProbeSettings::LOCAL);
        tm.set_weight("aws", 900).unwrap();
        tm.set_weight("azure", 100).unwrap();
        let rng = Rng::new(7);
        let n = 20_000;
        let to_aws = (0..n)
            .filter(|_| tm.route(rng.next_u64()).unwrap().name == "aws")
            .count();
        let share = to_aws * 1_000 / n;
        assert!((880..=920).contains(&share), "aws got {share}‰");
        // A degraded endpoint gets nothing, whatever its weight.
        for _ in 0..3 {
            tm.probed("aws", None).unwrap();
        }
        assert!((0..1_000).all(|_| tm.route(rng.next_u64()).unwrap().name == "azure"));
        assert_eq!(tm.set_weight("aws", 0), Err(EndpointError::Weight(0)));
        assert_eq!(
            tm.set_weight("aws", 1_001),
            Err(EndpointError::Weight(1_001))
        );
    }

    #[test]
    fn performance_routing_picks_the_lowest_measured_latency() {
        let mut tm = two(RoutingMethod::Performance, ProbeSettings::LOCAL);
        tm.probed("aws", Some(40 * MS)).unwrap();
        tm.probed("azure", Some(12 * MS)).unwrap();
        assert_eq!(tm.route(0).unwrap().name, "azure");
        tm.probed("azure", Some(60 * MS)).unwrap();
        assert_eq!(tm.route(0).unwrap().name, "aws");
    }

    /// Probes every endpoint every `interval` on a virtual clock in steps
    /// of 10 ms; an endpoint dead from `dies_at` fails its probes at their
    /// timeout. Returns when clients stop being sent to it.
    fn time_to_fail_over(settings: ProbeSettings, ttl: Duration, dies_at: Duration) -> Duration {
        let mut tm = two(RoutingMethod::Priority, settings);
        let mut dns = DnsCache::new(ttl);
        let step = 10 * MS;
        let mut now = Duration::ZERO;
        let mut next_probe = Duration::ZERO;
        let mut pending: Vec<(Duration, &str, Option<Duration>)> = Vec::new();
        loop {
            if now >= next_probe {
                for name in ["aws", "azure"] {
                    let dead = name == "aws" && now >= dies_at;
                    let answers_at = if dead {
                        now + settings.timeout
                    } else {
                        now + MS
                    };
                    pending.push((answers_at, name, (!dead).then_some(MS)));
                }
                next_probe += settings.interval;
            }
            pending.retain(|(at, name, answer)| {
                if *at <= now {
                    tm.probed(name, *answer).unwrap();
                    false
                } else {
                    true
                }
            });
            // A client looking up now, for a request now.
            if now >= dies_at && dns.resolve("client", now, &tm, 0).unwrap() == "azure" {
                return now - dies_at;
            }
            if now < dies_at {
                assert_eq!(dns.resolve("client", now, &tm, 0).unwrap(), "aws");
            }
            now += step;
            assert!(now < Duration::from_secs(3_600), "never failed over");
        }
    }

    #[test]
    fn a_client_is_moved_within_the_documented_bound_and_its_ttl_adds_to_it() {
        for settings in [ProbeSettings::LOCAL, ProbeSettings::TRAFFIC_MANAGER] {
            for ttl in [Duration::ZERO, Duration::from_secs(30)] {
                for dies_after in [0, 1, 7, 13] {
                    // Dying at various points of the probe cycle.
                    let dies_at = settings.interval * 3 + settings.interval * dies_after / 14;
                    let took = time_to_fail_over(settings, ttl, dies_at);
                    let bound = settings.detection_bound() + ttl;
                    assert!(
                        took <= bound,
                        "{settings:?}, TTL {ttl:?}: {took:?} over the bound {bound:?}"
                    );
                    // Exactly: up to one interval until the first failing
                    // probe, `tolerated` more intervals, that probe's
                    // timeout, the TTL, and one 10 ms step of the clock.
                    let exact = settings.interval * (settings.tolerated + 1)
                        + settings.timeout
                        + ttl
                        + 10 * MS;
                    assert!(
                        took <= exact,
                        "{settings:?}, TTL {ttl:?}: {took:?} over {exact:?}"
                    );
                    // Never faster than the failures it takes, less one
                    // interval of luck.
                    let floor = (settings.interval * settings.tolerated + settings.timeout)
                        .saturating_sub(settings.interval);
                    assert!(took >= floor, "{settings:?}: {took:?} under {floor:?}");
                }
            }
        }
    }

    #[test]
    fn a_client_keeps_its_answer_for_the_ttl_even_when_its_endpoint_degrades() {
        let mut tm = two(RoutingMethod::Priority, ProbeSettings::LOCAL);
        let mut dns = DnsCache::new(Duration::from_secs(30));
        let t = Duration::from_secs;
        assert_eq!(dns.resolve("a", t(0), &tm, 0).unwrap(), "aws");
        for _ in 0..3 {
            tm.probed("aws", None).unwrap();
        }
        assert_eq!(dns.resolve("a", t(29), &tm, 0).unwrap(), "aws", "cached");
        assert_eq!(
            dns.resolve("b", t(29), &tm, 0).unwrap(),
            "azure",
            "a new client"
        );
        assert_eq!(dns.resolve("a", t(30), &tm, 0).unwrap(), "azure", "expired");
        dns.expire(t(100));
        assert!(dns.answers.is_empty());
        // TTL 0: every request is a new lookup.
        let mut none = DnsCache::new(Duration::ZERO);
        assert_eq!(none.resolve("a", t(0), &tm, 0).unwrap(), "azure");
        assert!(none.answers.is_empty());
    }

    #[test]
    fn settings_are_checked_as_traffic_manager_checks_them() {
        assert!(ProbeSettings::TRAFFIC_MANAGER.check().is_ok());
        assert!(ProbeSettings::FAST_PROBING.check().is_ok());
        assert!(ProbeSettings::LOCAL.check().is_ok());
        let mut s = ProbeSettings::LOCAL;
        s.timeout = s.interval;
        assert!(s.check().is_err());
        s = ProbeSettings::LOCAL;
        s.tolerated = 10;
        assert!(s.check().is_err());
        assert_eq!(
            ProbeSettings::TRAFFIC_MANAGER.detection_bound(),
            Duration::from_secs(160)
        );
    }
}
