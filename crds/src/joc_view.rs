//! js7: JOC's own view of its cluster as a member's sidecar saw it at its
//! last look at JOC's tables, published on the member's pod
//! ([`crate::names::ANNOTATION_JOC_VIEW`]) for readers that talk only to the
//! Kubernetes API (`kubectl joc status`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

/// The annotation's value (JSON). Ages are as the database computed them at
/// the look (whole seconds of its clock, as JOC judges heartbeats); a
/// reader adds the time since `lookedAt` by its own clock, or shows them as
/// "at the look".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JocViewNote {
    /// `JOC_CLUSTER.MEMBER_ID`: JOC's active member; `None`: no row (no JOC
    /// instance is active).
    pub member_id: Option<String>,
    /// The pod that member id names (its host name part).
    pub member: Option<String>,
    /// Age of `JOC_CLUSTER.HEART_BEAT`, the active member's cluster
    /// heartbeat.
    pub cluster_heart_beat_age_seconds: Option<i64>,
    /// Age of this member's own `JOC_INSTANCES.HEART_BEAT`; `None`: JOC has
    /// no row for it (its JOC never started on this database).
    pub instance_heart_beat_age_seconds: Option<i64>,
    /// When the sidecar looked, by its clock.
    pub looked_at: Time,
}

impl JocViewNote {
    /// The annotation's text.
    pub fn to_annotation(&self) -> String {
        // A struct of strings, numbers and a timestamp always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an annotation's text; `None` if it is not one.
    pub fn from_annotation(text: &str) -> Option<JocViewNote> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_reads_back_and_names_its_fields_in_camel_case() {
        let note = JocViewNote {
            member_id: Some("joc-1:97c8".into()),
            member: Some("joc-1".into()),
            cluster_heart_beat_age_seconds: Some(2),
            instance_heart_beat_age_seconds: None,
            looked_at: Time(jiff::Timestamp::from_second(1_000).expect("valid")),
        };
        let text = note.to_annotation();
        assert!(text.contains(r#""memberId":"joc-1:97c8""#), "{text}");
        assert!(text.contains(r#""clusterHeartBeatAgeSeconds":2"#), "{text}");
        assert!(
            text.contains(r#""lookedAt":"1970-01-01T00:16:40Z""#),
            "{text}"
        );
        assert_eq!(JocViewNote::from_annotation(&text), Some(note));
        assert_eq!(JocViewNote::from_annotation("not json"), None);
    }
}
