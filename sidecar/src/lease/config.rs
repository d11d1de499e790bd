//! What a member needs to know to take part in the lease, and the checks that
//! keep the timing rules safe.

use std::time::Duration;

use super::error::LeaseError;

/// Default lease time-to-live.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);
/// Default renew (and standby heartbeat) interval.
pub const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_secs(1);

const MAX_NAME_LEN: usize = 200;
const MIN_TTL: Duration = Duration::from_millis(300);
const MAX_TTL: Duration = Duration::from_secs(600);

/// What kind of JOC instance a member is. API-server instances are never
/// active and never hand-over targets; they only keep a member row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberKind {
    Member,
    ApiServer,
}

impl MemberKind {
    /// The value stored in `joc_ha_member.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberKind::Member => "member",
            MemberKind::ApiServer => "api-server",
        }
    }

    pub fn parse(value: &str) -> Option<MemberKind> {
        match value {
            "member" => Some(MemberKind::Member),
            "api-server" => Some(MemberKind::ApiServer),
            _ => None,
        }
    }
}

/// Configuration of one lease participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// One lease row per cluster id (the JocCluster's namespace/name).
    pub cluster_id: String,
    /// This member's name (the pod name); unique within the cluster.
    pub member: String,
    pub kind: MemberKind,
    /// How long a lease lasts without renewal, judged by database time.
    pub ttl: Duration,
    /// How often the holder renews and standbys heartbeat. At most `ttl / 3`.
    pub renew_interval: Duration,
    /// Whether this member may acquire the lease from the start
    /// (see `ElectorHandle::set_ready`).
    pub ready: bool,
    /// Apply the schema migrations at start (default). When false, missing
    /// tables are reported as [`LeaseError::SchemaMissing`].
    pub migrate: bool,
    /// js7 mode: this cluster needs the database to itself (JOC's tables are
    /// database-wide). The first cluster to connect claims it (table
    /// `joc_ha_owner`); another cluster's members get
    /// [`LeaseError::DatabaseInUse`] and write nothing.
    pub exclusive: bool,
}

impl LeaseConfig {
    /// A member with the default timing (TTL 5 s, renew every 1 s), ready.
    pub fn new(cluster_id: impl Into<String>, member: impl Into<String>) -> Self {
        LeaseConfig {
            cluster_id: cluster_id.into(),
            member: member.into(),
            kind: MemberKind::Member,
            ttl: DEFAULT_TTL,
            renew_interval: DEFAULT_RENEW_INTERVAL,
            ready: true,
            migrate: true,
            exclusive: false,
        }
    }

    /// Checks names and timing; the error says what to change.
    pub fn validate(&self) -> Result<(), LeaseError> {
        check_name("cluster id", &self.cluster_id)?;
        check_name("member name", &self.member)?;
        if self.ttl < MIN_TTL || self.ttl > MAX_TTL {
            return Err(LeaseError::InvalidConfig(format!(
                "lease TTL {:?} is out of range: use {MIN_TTL:?} to {MAX_TTL:?} (default {DEFAULT_TTL:?})",
                self.ttl
            )));
        }
        if self.renew_interval.is_zero() || self.renew_interval > self.ttl / 3 {
            return Err(LeaseError::InvalidConfig(format!(
                "renew interval {:?} must be greater than zero and at most a third of the TTL \
                 {:?} (at most {:?}), so that two renewals can fail before the lease expires",
                self.renew_interval,
                self.ttl,
                self.ttl / 3
            )));
        }
        Ok(())
    }

    /// Safety margin between the end of the holder's local validity and the
    /// earliest instant anyone else can acquire: `ttl / 5` (1 s by default).
    ///
    /// The holder counts its validity from the instant it *sent* a renew that
    /// then succeeded, on its own monotonic clock; the database counts the
    /// expiry from the statement's own `now()`, which is later. The margin
    /// absorbs what is left: the rate difference between the two clocks (NTP
    /// slews at most 500 ppm, 2.5 ms over 5 s), scheduling delay of the
    /// holder's demotion, and the time the workload needs to notice the
    /// deadline and stop.
    pub fn margin(&self) -> Duration {
        self.ttl / 5
    }

    /// How long after the start of a successful renew the holder may act.
    pub fn validity(&self) -> Duration {
        self.ttl - self.margin()
    }

    /// MariaDB/MySQL only: the holder's role also ends `hold` after its last
    /// verified renew, so that a standby may take over `hold + margin` after
    /// the last renew once the holder's session lock is gone (see the
    /// `mysql` module).
    pub fn hold(&self) -> Duration {
        self.renew_interval * 2
    }

    /// A standby's heartbeat counts as fresh (hand-over target) for one TTL.
    pub fn freshness(&self) -> Duration {
        self.ttl
    }
}

fn check_name(what: &str, value: &str) -> Result<(), LeaseError> {
    if value.is_empty() {
        return Err(LeaseError::InvalidConfig(format!("the {what} is empty")));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(LeaseError::InvalidConfig(format!(
            "the {what} is {} bytes long; at most {MAX_NAME_LEN} are allowed",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(LeaseError::InvalidConfig(format!(
            "the {what} {value:?} contains control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = LeaseConfig::new("ns/joc", "joc-0");
        config.validate().expect("defaults must be valid");
        assert_eq!(config.ttl, Duration::from_secs(5));
        assert_eq!(config.renew_interval, Duration::from_secs(1));
        assert_eq!(config.margin(), Duration::from_secs(1));
        assert_eq!(config.validity(), Duration::from_secs(4));
    }

    #[test]
    fn renew_interval_above_a_third_of_ttl_is_refused() {
        let mut config = LeaseConfig::new("c", "m");
        config.renew_interval = Duration::from_millis(1700);
        let error = config.validate().expect_err("1.7 s > 5 s / 3");
        let text = error.to_string();
        assert!(text.contains("at most a third of the TTL"), "{text}");
        assert!(text.contains("1.7s") && text.contains("5s"), "{text}");
        config.renew_interval = Duration::from_secs(5) / 3;
        config.validate().expect("exactly a third is allowed");
        config.renew_interval = Duration::ZERO;
        assert!(config.validate().is_err());
    }

    #[test]
    fn ttl_range_and_names_are_checked() {
        let mut config = LeaseConfig::new("c", "m");
        config.ttl = Duration::from_millis(100);
        config.renew_interval = Duration::from_millis(10);
        assert!(config.validate().unwrap_err().to_string().contains("TTL"));
        let mut config = LeaseConfig::new("", "m");
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("cluster id is empty")
        );
        config.cluster_id = "x".repeat(201);
        assert!(config.validate().unwrap_err().to_string().contains("201"));
        let config = LeaseConfig::new("c", "bad\nname");
        assert!(config.validate().is_err());
    }

    #[test]
    fn mysql_hold_window_ends_before_ttl() {
        // hold + margin < ttl for every valid configuration, so the early
        // steal on MariaDB never waits longer than plain expiry would.
        for (ttl, renew) in [(5000, 1000), (5000, 1666), (300, 100), (60_000, 20_000)] {
            let mut config = LeaseConfig::new("c", "m");
            config.ttl = Duration::from_millis(ttl);
            config.renew_interval = Duration::from_millis(renew);
            config.validate().unwrap();
            assert!(
                config.hold() + config.margin() < config.ttl,
                "{ttl} {renew}"
            );
            assert!(config.hold() > config.renew_interval);
        }
    }
}
