//! The lease timings.

use std::time::Duration;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Lease timings, as Go-style durations (`5s`, `1500ms`).
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.renewInterval).getMilliseconds() * 3 <= duration(self.ttl).getMilliseconds()").message("lease.renewInterval must be at most a third of lease.ttl, so that a holder renews at least twice before its lease can expire"))]
pub struct LeaseSpec {
    /// How long a lease holds without renewal, judged by the database clock.
    /// A frozen or cut-off active member is replaced after this long.
    #[serde(default = "default_ttl")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('10m')").message("lease.ttl must be between 1s and 10m"))]
    pub ttl: String,
    /// How often the holder renews the lease and standbys heartbeat.
    #[serde(default = "default_renew_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('100ms')").message("lease.renewInterval must be at least 100ms"))]
    pub renew_interval: String,
}

impl Default for LeaseSpec {
    fn default() -> Self {
        Self {
            ttl: default_ttl(),
            renew_interval: default_renew_interval(),
        }
    }
}

fn default_ttl() -> String {
    "5s".to_owned()
}

fn default_renew_interval() -> String {
    "1s".to_owned()
}

impl LeaseSpec {
    /// The TTL as a duration, or the text that could not be read.
    pub fn ttl(&self) -> Result<Duration, String> {
        parse_duration(&self.ttl)
    }

    /// The renew interval as a duration, or the text that could not be read.
    pub fn renew_interval(&self) -> Result<Duration, String> {
        parse_duration(&self.renew_interval)
    }
}

/// Reads the Go-style durations the CRD admits: a sequence of
/// `<number><unit>` with units `ms`, `s` and `m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration such as 5s, 1500ms or 1m30s");
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let value: f64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1.0, 2)
        } else if rest.starts_with('s') {
            (1_000.0, 1)
        } else if rest.starts_with('m') {
            (60_000.0, 1)
        } else {
            return Err(invalid());
        };
        total += value * unit_ms;
        rest = &rest[len..];
    }
    if !total.is_finite() || total > u64::MAX as f64 / 2.0 {
        return Err(invalid());
    }
    Ok(Duration::from_micros((total * 1_000.0).round() as u64))
}
