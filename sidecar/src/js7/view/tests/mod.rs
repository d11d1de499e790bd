//! The pure parts of `js7::view`, as tables.

use super::*;

mod health;
mod holder;

fn instance(id: &str, age: i64, api: bool) -> InstanceRow {
    InstanceRow {
        member_id: id.to_owned(),
        heart_beat_age_s: age,
        api_server: api,
        stamp: InstanceStamp::default(),
        security_level: Some("LOW".to_owned()),
    }
}

fn view(active: Option<&str>, switch: Option<(&str, i64)>) -> JocView {
    JocView::new(
        active.map(|id| ClusterRow {
            member_id: id.to_owned(),
            heart_beat_age_s: 0,
            switch_member_id: switch.map(|(s, _)| s.to_owned()),
            switch_heart_beat_age_s: switch.map(|(_, age)| age),
        }),
        vec![
            instance("a:1", 0, false),
            instance("b:1", 1, false),
            instance("c:1", 9, false),
            instance("api:1", 0, true),
        ],
        Duration::from_secs(5),
    )
}

fn pod(id: &str) -> Option<String> {
    Some(super::super::hostname_of(id).to_owned())
}

/// A fresh install, JOC's active member `a:1` (its own heartbeat 9 s
/// old, JOC_CLUSTER's `cluster_age` old), Controllers as given.
fn waiting(cluster_age: i64, controllers: Vec<(i64, i64)>) -> JocView {
    let mut v = view(Some("a:1"), None).with_controllers(controllers);
    if let Some(c) = &mut v.cluster {
        c.heart_beat_age_s = cluster_age;
    }
    v.instances[0].heart_beat_age_s = 9;
    v
}
