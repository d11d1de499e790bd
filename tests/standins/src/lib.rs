//! What the tests run in place of JOC Cockpit and its workload: JOC's model
//! ([`joc`]: its tables and rules, and the helpers tests use to read and
//! seed them), the history workload ([`history`]) and the lease workload
//! ([`contender`]), with the binaries `joc-standin`, `standin-cockpit` and
//! `lease-contender`. The harness (`joc-ha-tests`) starts these binaries and
//! re-exports `joc` and `history`.

pub mod contender;
pub mod history;
pub mod joc;
