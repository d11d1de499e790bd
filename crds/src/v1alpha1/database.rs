//! The shared database.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The shared database.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// The database product: `postgresql`, `mysql` or `mariadb`; `sqlite`
    /// for single-host evaluation only.
    #[serde(rename = "type")]
    pub kind: DatabaseKind,
    /// The Secret holding the connection: either a key `url`
    /// (`postgres://user:password@host:5432/db`, `mysql://...`), or the keys
    /// `host`, `port`, `database`, `user` and `password`.
    pub secret_ref: SecretReference,
    /// TLS to the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<DatabaseTls>,
    /// Whether JOC creates its tables at start (`create_db_tables` in
    /// `joc.properties`); default true. Turn it off when a DBA creates them.
    #[serde(default = "default_true")]
    pub create_tables: bool,
}

fn default_true() -> bool {
    true
}

/// Database products JOC Cockpit and the lease support in a JocCluster.
/// `sqlite` is for single-host evaluation only (the demo): every member must
/// run on the host that holds the file.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    Postgresql,
    Mysql,
    Mariadb,
    Sqlite,
}

/// A Secret in the JocCluster's namespace.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// TLS settings for the database connection.
#[derive(Serialize, Deserialize, KubeSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseTls {
    /// `disable`, `prefer`, `require`, `verify-ca` or `verify-full`.
    pub mode: TlsMode,
    /// Secret with the CA certificate (PEM) under the key `ca.crt`, for the
    /// verifying modes. It is mounted into the sidecar and JOC: the sidecar
    /// verifies with it, and `hibernate.cfg.xml` names it to JOC's JDBC
    /// driver (PostgreSQL `sslrootcert`, MariaDB `serverSslCert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretReference>,
}

/// How the database connection uses TLS.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}
