//! What this member publishes of JOC's view (its metrics and the pod
//! annotation `joc-ha.dev/joc-view`), and when: pure, a table below.

use std::time::Duration;

use joc_ha_crds::joc_view::JocViewNote;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::time::Instant;

use super::{JocView, hostname_of};

/// The longest time between two writes of the annotation while JOC's
/// active member stays the same: every pod patch wakes every sidecar's pod
/// watch, so the ages are refreshed this seldom, not at each look.
pub const NOTE_PERIOD: Duration = Duration::from_secs(30);

/// One look at JOC's tables, from this member's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    /// `JOC_CLUSTER.MEMBER_ID` (`None`: no row).
    pub member_id: Option<String>,
    /// Age of `JOC_CLUSTER.HEART_BEAT`, whole seconds by the database.
    pub cluster_age_s: Option<i64>,
    /// Age of this member's `JOC_INSTANCES` heartbeat (`None`: no row).
    pub own_age_s: Option<i64>,
    /// JOC's `MEMBER_ID` is this member's.
    pub names_me: bool,
}

impl Look {
    pub fn of(view: &JocView, my_member_id: &str) -> Look {
        Look {
            member_id: view.active_member().map(str::to_owned),
            cluster_age_s: view.cluster.as_ref().map(|c| c.heart_beat_age_s),
            own_age_s: view.instance(my_member_id).map(|i| i.heart_beat_age_s),
            names_me: view.confirms(my_member_id),
        }
    }

    /// The annotation's content for this look, made at `wall_now`.
    pub fn note(&self, wall_now: jiff::Timestamp) -> JocViewNote {
        JocViewNote {
            member_id: self.member_id.clone(),
            member: self.member_id.as_deref().map(|m| hostname_of(m).to_owned()),
            cluster_heart_beat_age_seconds: self.cluster_age_s,
            instance_heart_beat_age_seconds: self.own_age_s,
            looked_at: Time(wall_now),
        }
    }
}

/// The last note written: JOC's active member in it, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteWritten {
    pub member_id: Option<String>,
    /// It had an age of this member's own `JOC_INSTANCES` row.
    pub has_own_row: bool,
    pub at: Instant,
}

/// Whether `look` is to be written now: the first look, a change of JOC's
/// active member (at once: that is what a reader asks about), this
/// member's own instance row appearing or going (a note written before its
/// JOC registered said "no heartbeat" for up to the period), or once
/// [`NOTE_PERIOD`] has passed since the last write (fresher ages); never
/// for ages alone within the period.
pub fn note_due(last: Option<&NoteWritten>, look: &Look, now: Instant) -> bool {
    match last {
        None => true,
        Some(last) => {
            last.member_id != look.member_id
                || last.has_own_row != look.own_age_s.is_some()
                || now.saturating_duration_since(last.at) >= NOTE_PERIOD
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::js7::{ClusterRow, InstanceRow};

    fn look(member: Option<&str>, own_age: i64) -> Look {
        Look {
            member_id: member.map(str::to_owned),
            cluster_age_s: member.map(|_| 1),
            own_age_s: Some(own_age),
            names_me: member == Some("joc-0:aa"),
        }
    }

    #[test]
    fn the_note_is_written_when_joc_moves_or_its_period_passed_never_per_look() {
        let t0 = Instant::now();
        let written = |member: Option<&str>| NoteWritten {
            member_id: member.map(str::to_owned),
            has_own_row: true,
            at: t0,
        };
        let before_own_row = NoteWritten {
            has_own_row: false,
            ..written(Some("joc-0:aa"))
        };
        let no_own_row = Look {
            own_age_s: None,
            ..look(Some("joc-0:aa"), 0)
        };
        let s = Duration::from_secs;
        // (last written, this look, time since the last write, due)
        let table: [(Option<NoteWritten>, Look, Duration, bool); 11] = [
            (None, look(Some("joc-0:aa"), 1), s(0), true),
            (None, look(None, 1), s(0), true),
            (
                Some(written(Some("joc-0:aa"))),
                look(Some("joc-0:aa"), 2),
                s(1),
                false,
            ),
            (
                Some(written(Some("joc-0:aa"))),
                look(Some("joc-0:aa"), 9),
                s(29),
                false,
            ),
            (
                Some(written(Some("joc-0:aa"))),
                look(Some("joc-0:aa"), 1),
                s(30),
                true,
            ),
            (
                Some(written(Some("joc-0:aa"))),
                look(Some("joc-1:bb"), 1),
                s(1),
                true,
            ),
            (Some(written(Some("joc-0:aa"))), look(None, 1), s(1), true),
            (Some(written(None)), look(Some("joc-1:bb"), 1), s(0), true),
            // This member's JOC registered since the last note: at once.
            (
                Some(before_own_row.clone()),
                look(Some("joc-0:aa"), 1),
                s(1),
                true,
            ),
            (Some(before_own_row), no_own_row.clone(), s(1), false),
            (Some(written(Some("joc-0:aa"))), no_own_row, s(1), true),
        ];
        for (last, look, after, due) in table {
            assert_eq!(
                note_due(last.as_ref(), &look, t0 + after),
                due,
                "{last:?} then {look:?} after {after:?}"
            );
        }
    }

    #[test]
    fn a_look_names_jocs_active_member_and_this_members_heartbeat() {
        let view = JocView::new(
            Some(ClusterRow {
                member_id: "joc-1:bb".into(),
                heart_beat_age_s: 3,
                switch_member_id: None,
                switch_heart_beat_age_s: None,
            }),
            vec![
                InstanceRow {
                    member_id: "joc-0:aa".into(),
                    heart_beat_age_s: 1,
                    ..InstanceRow::default()
                },
                InstanceRow {
                    member_id: "joc-1:bb".into(),
                    heart_beat_age_s: 0,
                    ..InstanceRow::default()
                },
            ],
            Duration::from_secs(5),
        );
        let seen = Look::of(&view, "joc-0:aa");
        assert_eq!(
            seen,
            Look {
                member_id: Some("joc-1:bb".into()),
                cluster_age_s: Some(3),
                own_age_s: Some(1),
                names_me: false,
            }
        );
        assert!(Look::of(&view, "joc-1:bb").names_me);
        let note = seen.note(jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(note.member.as_deref(), Some("joc-1"), "the pod, for people");
        assert_eq!(note.cluster_heart_beat_age_seconds, Some(3));

        let empty = Look::of(&JocView::default(), "joc-2:cc");
        assert_eq!(
            (
                empty.member_id,
                empty.cluster_age_s,
                empty.own_age_s,
                empty.names_me
            ),
            (None, None, None, false),
            "no JOC row, no instance row"
        );
    }
}
