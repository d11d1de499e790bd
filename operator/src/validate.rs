//! Validate: what the API server's schema cannot check, the Secrets the
//! spec names.

use joc_ha_crds::JocCluster;
use joc_ha_crds::names::{license_key, pod as pod_names, reason, secret_key};
use joc_ha_crds::v1alpha1::WorkloadMode;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

#[cfg(doc)]
use crate::build::stamp_secret_versions;
use crate::error::{Error, Result};
use crate::status::Problem;

/// Checks what the API server's schema cannot: that the Secrets the spec
/// names exist with the keys they need (the database Secret a URL or all
/// the parts; the license Secret `js7-license.jar` and a key file; the CA
/// Secret `ca.crt`). Reads key names only, never the values. Also returns
/// the Secrets' versions for [`stamp_secret_versions`].
pub(crate) async fn validate(
    client: &Client,
    cluster: &JocCluster,
    namespace: &str,
) -> Result<(Vec<Problem>, String)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut problems = Vec::new();
    let mut versions = Vec::new();
    let secret_name = &cluster.spec.database.secret_ref.name;
    let database = secrets.get_opt(secret_name).await?;
    versions.push(("db", database.as_ref().and_then(|s| s.resource_version())));
    match database.as_ref().map(secret_key_names) {
        None => problems.push(Problem {
            reason: reason::SECRET_MISSING,
            message: Error::SecretMissing {
                namespace: namespace.to_owned(),
                name: secret_name.clone(),
            }
            .to_string(),
        }),
        Some(keys) => {
            if let Some(missing) = missing_database_keys(&keys) {
                problems.push(Problem {
                    reason: reason::SECRET_MISSING,
                    message: Error::SecretIncomplete {
                        name: secret_name.clone(),
                        missing,
                    }
                    .to_string(),
                });
            }
        }
    }
    if let Some(ca) = cluster
        .spec
        .database
        .tls
        .as_ref()
        .and_then(|t| t.ca_secret_ref.as_ref())
    {
        let secret = secrets.get_opt(&ca.name).await?;
        versions.push(("ca", secret.as_ref().and_then(|s| s.resource_version())));
        let keys = secret.as_ref().map(secret_key_names);
        if !keys.is_some_and(|k| k.iter().any(|k| k == pod_names::DATABASE_CA_KEY)) {
            problems.push(Problem {
                reason: reason::SECRET_MISSING,
                message: Error::CaSecret {
                    namespace: namespace.to_owned(),
                    name: ca.name.clone(),
                }
                .to_string(),
            });
        }
    }
    if let (Some(license), WorkloadMode::Js7) = (&cluster.spec.license, cluster.spec.workload.mode)
    {
        let secret = secrets.get_opt(&license.secret_ref.name).await?;
        versions.push((
            "license",
            secret.as_ref().and_then(|s| s.resource_version()),
        ));
        let keys = secret.as_ref().map(secret_key_names);
        if let Some(problem) = license_problem(keys.as_deref()) {
            problems.push(Problem {
                reason: reason::LICENSE_SECRET_MISSING,
                message: Error::LicenseSecret {
                    namespace: namespace.to_owned(),
                    name: license.secret_ref.name.clone(),
                    problem,
                }
                .to_string(),
            });
        }
    }
    Ok((problems, secret_versions(&versions)))
}

/// `db=812,license=77`: the value of the pod templates' Secret-versions
/// annotation (a missing Secret is a problem, so it never gets there).
fn secret_versions(versions: &[(&str, Option<String>)]) -> String {
    versions
        .iter()
        .map(|(what, version)| format!("{what}={}", version.as_deref().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",")
}

/// The key names of a Secret.
fn secret_key_names(secret: &Secret) -> Vec<String> {
    secret
        .data
        .iter()
        .flat_map(|d| d.keys().cloned())
        .chain(secret.string_data.iter().flat_map(|d| d.keys().cloned()))
        .collect()
}

/// What the database Secret lacks: `None` when it has `url` or every part.
fn missing_database_keys(keys: &[String]) -> Option<String> {
    let has = |key: &str| keys.iter().any(|k| k == key);
    if has(secret_key::URL) {
        return None;
    }
    let missing: Vec<&str> = [
        secret_key::HOST,
        secret_key::DATABASE,
        secret_key::USER,
        secret_key::PASSWORD,
    ]
    .into_iter()
    .filter(|key| !has(key))
    .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// What is wrong with the license Secret (its key names), if anything.
fn license_problem(keys: Option<&[String]>) -> Option<String> {
    let Some(keys) = keys else {
        return Some("does not exist".to_owned());
    };
    if !keys.iter().any(|k| k == license_key::JAR) {
        return Some(format!("has no key {}", license_key::JAR));
    }
    if keys.iter().all(|k| k == license_key::JAR) {
        return Some(format!(
            "has no license key file besides {}",
            license_key::JAR
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|k| (*k).to_owned()).collect()
    }

    #[test]
    fn secret_versions_name_each_secret() {
        assert_eq!(
            secret_versions(&[("db", Some("12".into())), ("license", Some("7".into()))]),
            "db=12,license=7"
        );
        assert_eq!(secret_versions(&[("db", None)]), "db=");
    }

    #[test]
    fn database_secret_keys() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["url"], None),
            (&["host", "database", "user", "password"], None),
            (&["host", "port", "database", "user", "password"], None),
            (&["host", "user"], Some("database, password")),
            (&[], Some("host, database, user, password")),
        ];
        for (names, want) in cases {
            assert_eq!(
                missing_database_keys(&keys(names)).as_deref(),
                *want,
                "{names:?}"
            );
        }
    }

    #[test]
    fn license_secret_keys() {
        let cases: &[(Option<&[&str]>, Option<&str>)] = &[
            (None, Some("does not exist")),
            (Some(&["js7-license.jar", "js7-license.pem"]), None),
            (
                Some(&["js7-license.pem"]),
                Some("has no key js7-license.jar"),
            ),
            (
                Some(&["js7-license.jar"]),
                Some("has no license key file besides js7-license.jar"),
            ),
        ];
        for (names, want) in cases {
            let names = names.map(keys);
            assert_eq!(
                license_problem(names.as_deref()).as_deref(),
                *want,
                "{names:?}"
            );
        }
    }
}
