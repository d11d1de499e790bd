//! What the tests run in place of JOC Cockpit and its workload: JOC's model
//! ([`joc`]: its tables and rules, and the helpers tests use to read and
//! seed them) and the history workload ([`history`]), with the binaries
//! `joc-standin`, `standin-cockpit` and `lease-contender`. The harness
//! (`joc-ha-tests`) starts these binaries and re-exports both modules.

pub mod history;
pub mod joc;
