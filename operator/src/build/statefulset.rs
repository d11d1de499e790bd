//! The members' StatefulSet: stable pod names keep JOC member ids stable
//! (member id = hostname + data directory hash).

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{headless_service_name, members_statefulset_name, pod};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::BuildContext;
use super::labels::{Component, child_meta, label_selector, selector_labels};
use super::pod::pod_template;
use crate::error::Result;

/// Where JOC writes its logs in the sosberlin/js7 image.
const JOC_LOG_DIR: &str = "/var/log/sos-berlin.com/js7/joc";

pub fn members_statefulset(cluster: &JocCluster, ctx: &BuildContext) -> Result<StatefulSet> {
    let name = cluster.name_any();
    let mut template = pod_template(cluster, Component::Member, ctx)?;
    let mut claims = None;
    if let Some(logs) = &cluster.spec.log_volume {
        claims = Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(pod::LOG_VOLUME.to_owned()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                storage_class_name: logs.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_owned(), logs.size.clone())].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        // A fresh volume belongs to root; group ownership lets JOC (group 0,
        // see pod::JOC_GROUP_ID) write its logs there.
        if let Some(security) = template
            .spec
            .as_mut()
            .and_then(|spec| spec.security_context.as_mut())
        {
            security.fs_group = Some(super::pod::JOC_GROUP_ID);
            security.fs_group_change_policy = Some("OnRootMismatch".to_owned());
        }
        if let Some(cockpit) = template
            .spec
            .as_mut()
            .and_then(|spec| spec.containers.first_mut())
        {
            cockpit
                .volume_mounts
                .get_or_insert_with(Vec::new)
                .push(VolumeMount {
                    name: pod::LOG_VOLUME.to_owned(),
                    mount_path: JOC_LOG_DIR.to_owned(),
                    ..Default::default()
                });
        }
    }
    Ok(StatefulSet {
        metadata: child_meta(cluster, members_statefulset_name(&name))?,
        spec: StatefulSetSpec {
            replicas: Some(cluster.spec.members),
            service_name: Some(headless_service_name(&name)),
            selector: label_selector(selector_labels(cluster, Component::Member)),
            // Members are peers: start and stop them together, not in order.
            pod_management_policy: Some("Parallel".to_owned()),
            // The operator replaces pods itself: standbys first, then a
            // switch-over, then the old active one.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                ..Default::default()
            }),
            template,
            volume_claim_templates: claims,
            ..Default::default()
        },
        ..Default::default()
    })
}
