//! The four Services: `<name>` (active member only), `<name>-members`,
//! `<name>-api` and `<name>-headless`.

use std::collections::BTreeMap;

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{
    LABEL_ROLE, ROLE_ACTIVE, active_service_name, api_service_name, headless_service_name,
    members_service_name, pod,
};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::labels::{Component, child_meta, selector_labels};
use crate::error::Result;

pub fn services(cluster: &JocCluster) -> Result<Vec<Service>> {
    let name = cluster.name_any();
    let members = selector_labels(cluster, Component::Member);
    let mut active = members.clone();
    active.insert(LABEL_ROLE.to_owned(), ROLE_ACTIVE.to_owned());
    let user_facing = Some(cluster.spec.service.kind.as_str().to_owned());

    let mut services = vec![
        service(
            cluster,
            active_service_name(&name),
            active,
            user_facing.clone(),
            false,
        )?,
        service(
            cluster,
            members_service_name(&name),
            members.clone(),
            None,
            false,
        )?,
        // Publishes not-ready members too, so a starting member's DNS name
        // resolves (JOC's member id needs a stable hostname).
        service(cluster, headless_service_name(&name), members, None, true)?,
    ];
    if cluster.spec.api_servers > 0 {
        services.push(service(
            cluster,
            api_service_name(&name),
            selector_labels(cluster, Component::ApiServer),
            user_facing,
            false,
        )?);
    }
    Ok(services)
}

fn service(
    cluster: &JocCluster,
    name: String,
    selector: BTreeMap<String, String>,
    type_: Option<String>,
    headless: bool,
) -> Result<Service> {
    let mut metadata = child_meta(cluster, name)?;
    if type_.is_some() && !cluster.spec.service.annotations.is_empty() {
        metadata.annotations = Some(cluster.spec.service.annotations.clone());
    }
    // HTTP only: HTTPS is refused by the CRD until JOC gets a keystore.
    let ports = vec![ServicePort {
        name: Some(pod::HTTP_PORT_NAME.to_owned()),
        port: cluster.spec.ports.http,
        target_port: Some(IntOrString::String(pod::HTTP_PORT_NAME.to_owned())),
        ..Default::default()
    }];
    Ok(Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(ports),
            type_: if headless { None } else { type_ },
            cluster_ip: headless.then(|| "None".to_owned()),
            publish_not_ready_addresses: headless.then_some(true),
            ..Default::default()
        }),
        ..Default::default()
    })
}
