//! The operator's one error type; each variant says what a person can do.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("the JocCluster has no {0}; it must come from the API server")]
    MissingObjectKey(&'static str),

    #[error("invalid JocCluster spec: {0}; fix the field and apply again")]
    InvalidSpec(String),

    #[error(
        "Secret {name} not found in namespace {namespace}: create it (see spec.database.secretRef)"
    )]
    SecretMissing { namespace: String, name: String },

    #[error(
        "Secret {name} lacks {missing}: give it a key `url`, or the keys host, port, database, user and password"
    )]
    SecretIncomplete { name: String, missing: String },

    #[error(
        "Secret {name} (spec.database.tls.caSecretRef) not found in namespace {namespace} or without the key ca.crt: create it with the database's CA certificate (PEM) under ca.crt"
    )]
    CaSecret { namespace: String, name: String },

    #[error(
        "license Secret {name} (spec.license.secretRef) in namespace {namespace} {problem}: create it with the key js7-license.jar and your license key file(s) from SOS, e.g. `kubectl create secret generic {name} --from-file=js7-license.jar --from-file=js7-license.pem`"
    )]
    LicenseSecret {
        namespace: String,
        name: String,
        problem: String,
    },

    #[error("Kubernetes API call failed: {0}; it is retried with back-off")]
    Kube(#[from] kube::Error),

    #[error("cannot serialize {0}: {1}")]
    Serialize(&'static str, serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
