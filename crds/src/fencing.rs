//! The members a user fenced: the JocCluster annotation
//! [`ANNOTATION_FENCED_MEMBERS`], read the same way by the operator (status),
//! the sidecars (who may hold the lease) and `kubectl joc` (which writes it).
//!
//! A JSON array of pod names, as CloudNativePG's `cnpg.io/fencedInstances`
//! (`["joc-1"]`), so that a hand-written value reads like theirs. A fenced
//! member takes no part in the lease: its sidecar marks it not ready, hands
//! the lease to a ready standby if it holds it, and never takes it again
//! until it is unfenced; no switch-over or hand-over targets it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use kube::ResourceExt as _;

use crate::JocCluster;
use crate::names::ANNOTATION_FENCED_MEMBERS;

/// The fenced members named by `annotations`: empty if the annotation is
/// absent; the error says what is wrong with it, for an Event or a log line.
pub fn fenced_members(annotations: &BTreeMap<String, String>) -> Result<BTreeSet<String>, String> {
    match annotations.get(ANNOTATION_FENCED_MEMBERS) {
        None => Ok(BTreeSet::new()),
        Some(value) => parse(value),
    }
}

/// The members fenced now: the annotation, or while it is malformed, what
/// the operator last recorded in the status (the sidecars, too, keep what
/// they had).
pub fn fenced_now(cluster: &JocCluster) -> BTreeSet<String> {
    fenced_members(cluster.annotations()).unwrap_or_else(|_| {
        cluster
            .status
            .iter()
            .flat_map(|s| &s.members)
            .filter(|m| m.fenced)
            .map(|m| m.name.clone())
            .collect()
    })
}

/// Reads the annotation's value.
pub fn parse(value: &str) -> Result<BTreeSet<String>, String> {
    if value.trim().is_empty() {
        return Ok(BTreeSet::new());
    }
    let names: Vec<String> = serde_json::from_str(value).map_err(|error| {
        format!(
            "{ANNOTATION_FENCED_MEMBERS} must be a JSON array of pod names such as [\"joc-1\"], not {value:?} ({error}); `kubectl joc fence` writes it"
        )
    })?;
    if let Some(bad) = names.iter().find(|n| !crate::pods::is_pod_name(n)) {
        return Err(format!(
            "{ANNOTATION_FENCED_MEMBERS}: {bad:?} is not a pod name"
        ));
    }
    Ok(names.into_iter().collect())
}

/// The annotation's value for `members`, or `None` (remove it) if empty.
pub fn render(members: &BTreeSet<String>) -> Option<String> {
    (!members.is_empty()).then(|| {
        serde_json::to_string(&members.iter().collect::<Vec<_>>())
            .unwrap_or_else(|_| "[]".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_what_they_mean() {
        let set = |names: &[&str]| {
            names
                .iter()
                .map(|n| (*n).to_owned())
                .collect::<BTreeSet<_>>()
        };
        let cases: Vec<(&str, Result<BTreeSet<String>, &str>)> = vec![
            ("", Ok(set(&[]))),
            ("[]", Ok(set(&[]))),
            (r#"["joc-1"]"#, Ok(set(&["joc-1"]))),
            (
                r#" ["joc-2", "joc-0", "joc-2"] "#,
                Ok(set(&["joc-0", "joc-2"])),
            ),
            ("joc-1", Err("must be a JSON array")),
            (r#"{"joc-1":true}"#, Err("must be a JSON array")),
            (r#"["*"]"#, Err("\"*\" is not a pod name")),
            (r#"["Joc-1"]"#, Err("not a pod name")),
            (r#"[1]"#, Err("must be a JSON array")),
        ];
        for (value, expected) in cases {
            match (parse(value), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{value:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{value:?}: {got}"),
                (got, want) => panic!("{value:?}: got {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn render_reads_back_and_empty_removes() {
        let members: BTreeSet<String> = ["joc-1".to_owned(), "joc-0".to_owned()].into();
        let value = render(&members).expect("a value");
        assert_eq!(value, r#"["joc-0","joc-1"]"#);
        assert_eq!(parse(&value), Ok(members));
        assert_eq!(render(&BTreeSet::new()), None);
        let mut annotations = BTreeMap::new();
        assert_eq!(fenced_members(&annotations), Ok(BTreeSet::new()));
        annotations.insert(ANNOTATION_FENCED_MEMBERS.to_owned(), value);
        assert_eq!(fenced_members(&annotations).map(|m| m.len()), Ok(2));
    }
}
