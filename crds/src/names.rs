//! Every label, annotation, condition, event reason and derived object name of
//! joc-ha, in one place (docs/design.md §3). Code elsewhere refers to these
//! constants, never to the strings.

/// The API group of every joc-ha resource and the prefix of its labels.
pub const GROUP: &str = "joc-ha.dev";

/// Pod label naming the JocCluster a pod belongs to.
pub const LABEL_CLUSTER: &str = "joc-ha.dev/cluster";
/// Pod label telling members from API-server instances.
pub const LABEL_COMPONENT: &str = "joc-ha.dev/component";
/// Pod label of a member's role; written only by the sidecar.
pub const LABEL_ROLE: &str = "joc-ha.dev/role";

/// `joc-ha.dev/component` of a cluster member (takes part in the lease).
pub const COMPONENT_MEMBER: &str = "member";
/// `joc-ha.dev/component` of an API-server instance (never in the lease).
pub const COMPONENT_API_SERVER: &str = "api-server";

/// `joc-ha.dev/role` of the one member that holds the lease.
pub const ROLE_ACTIVE: &str = "active";
/// `joc-ha.dev/role` of every other member.
pub const ROLE_STANDBY: &str = "standby";

/// Annotation on the active member pod with the lease term its sidecar
/// holds; written only by the sidecar, removed on demotion.
pub const ANNOTATION_LEASE_TERM: &str = "joc-ha.dev/lease-term";
/// Annotation on the active pod while it stays active in failsafe mode (the
/// database is down for everyone); a new holder waits for it to go.
pub const ANNOTATION_FAILSAFE: &str = "joc-ha.dev/failsafe";
/// js7: annotation on each member pod with JOC's view as that pod's sidecar
/// last published it (JSON, [`crate::joc_view::JocViewNote`]): JOC's active
/// member and the heartbeat ages it saw. Written only by the pod's own
/// sidecar, when JOC's active member changes or at most every 30 s, never
/// per look (every pod patch wakes every sidecar's pod watch).
pub const ANNOTATION_JOC_VIEW: &str = "joc-ha.dev/joc-view";

/// Pod-template annotation with the resourceVersions of the Secrets the
/// pods read at start (database, its CA, license), e.g. `db=812,license=77`:
/// a changed Secret changes the template, so the operator rolls the pods
/// (JOC reads its password from the environment only at start). Versions,
/// not a hash of the data: nothing derived from a credential is in the pod.
pub const ANNOTATION_SECRET_VERSIONS: &str = "joc-ha.dev/secret-versions";

/// Annotation on a JocCluster asking for a switch-over to a pod, or to `any`.
pub const ANNOTATION_SWITCHOVER_TO: &str = "joc-ha.dev/switchover-to";
/// Value of [`ANNOTATION_SWITCHOVER_TO`] meaning "the best ready standby".
pub const SWITCHOVER_TO_ANY: &str = "any";

/// Annotation on a JocCluster listing the members a user fenced (`kubectl
/// joc fence`), a JSON array of pod names as CloudNativePG's
/// `cnpg.io/fencedInstances`: a fenced member never takes or receives the
/// lease (see [`crate::fencing`]). On the JocCluster, not on the pod, so
/// that it outlives the pod.
pub const ANNOTATION_FENCED_MEMBERS: &str = "joc-ha.dev/fenced-members";

/// Standard labels every object created for a JocCluster carries.
pub const LABEL_APP_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_APP_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_APP_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const APP_NAME: &str = "joc-cockpit";
pub const MANAGED_BY: &str = "joc-ha-operator";

/// Field manager of everything the operator applies (server-side apply).
pub const FIELD_MANAGER_OPERATOR: &str = "joc-ha-operator";
/// Field manager of the sidecar's writes (role label, switch-over status).
pub const FIELD_MANAGER_SIDECAR: &str = "joc-ha-sidecar";

/// Status condition types of a JocCluster.
pub mod condition {
    /// All members and API servers Ready and one member active.
    pub const READY: &str = "Ready";
    /// Exactly one pod behind the active Service.
    pub const AVAILABLE: &str = "Available";
    /// The operator is rolling out a change.
    pub const PROGRESSING: &str = "Progressing";
    /// Something needs a person: bad input, a missing Secret, no active member.
    pub const DEGRADED: &str = "Degraded";
    /// js7: whether a JS7 license is given (`spec.license`). Without one,
    /// JOC cannot fail over: False with reason `NoClusterLicense` when there
    /// is more than one member.
    pub const LICENSED: &str = "Licensed";
    /// js7: whether joc-ha knows the JOC release of `spec.image` (read from
    /// its tag); False with reason `UnknownJocVersion` otherwise.
    pub const JOC_VERSION: &str = "JocVersion";
    /// True while `joc-ha.dev/fenced-members` names members (Unknown while
    /// it is malformed).
    pub const FENCED: &str = "Fenced";
}

/// Reasons of Events and conditions, in the words `kubectl describe` shows.
pub mod reason {
    pub const SWITCHOVER_COMPLETED: &str = "SwitchoverCompleted";
    pub const SWITCHOVER_REJECTED: &str = "SwitchoverRejected";
    pub const BECAME_ACTIVE: &str = "BecameActive";
    pub const DEMOTED: &str = "Demoted";
    pub const SECRET_MISSING: &str = "SecretMissing";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const RECONCILED: &str = "Reconciled";
    /// js7 mode: the lease holder asked JOC to make its member active.
    pub const JOC_SWITCH_REQUESTED: &str = "JocSwitchRequested";
    /// js7 mode: JOC moved its active member by itself; the lease followed.
    pub const LEASE_FOLLOWED_JOC: &str = "LeaseFollowedJoc";
    /// js7 mode: the holder's JOC, JOC's active member, went silent; the
    /// lease and a switch request went to a live member before JOC's
    /// standbys could race for the active role.
    pub const HANDED_ON_FROM_SILENT_JOC: &str = "HandedOnFromSilentJoc";
    /// js7: a license Secret is named (its content is JOC's to check).
    pub const LICENSE_GIVEN: &str = "LicenseGiven";
    /// js7: several members and no license: fail-over will not work.
    pub const NO_CLUSTER_LICENSE: &str = "NoClusterLicense";
    /// js7: one member and no license: nothing to fail over to.
    pub const NO_LICENSE_SINGLE_MEMBER: &str = "NoLicenseSingleMember";
    /// js7: the image's JOC release is one joc-ha's rules were checked for.
    pub const SUPPORTED_JOC_VERSION: &str = "SupportedJocVersion";
    /// js7: the image's tag names a JOC release joc-ha does not know, or no
    /// release at all (a digest, `latest`).
    pub const UNKNOWN_JOC_VERSION: &str = "UnknownJocVersion";
    /// The license Secret named by `spec.license` is missing or lacks keys.
    pub const LICENSE_SECRET_MISSING: &str = "LicenseSecretMissing";
    /// A member's pod is not behind the active Service (a label its
    /// selector needs was removed, or it was orphaned): its sidecar gives up
    /// the lease until it is back.
    pub const LEFT_SERVICE: &str = "LeftService";
    /// A member's sidecar saw itself named in `joc-ha.dev/fenced-members`:
    /// it gave up the lease (to a ready standby) and takes no part in it.
    pub const MEMBER_FENCED: &str = "MemberFenced";
    /// A member's sidecar saw itself taken off `joc-ha.dev/fenced-members`.
    pub const MEMBER_UNFENCED: &str = "MemberUnfenced";
    /// `Fenced` condition: members are fenced.
    pub const MEMBERS_FENCED: &str = "MembersFenced";
    /// `Fenced` condition: no member is fenced.
    pub const NONE_FENCED: &str = "NoneFenced";
    /// `Fenced` condition (Unknown) and Warning Event: the annotation
    /// `joc-ha.dev/fenced-members` is malformed; nothing changed.
    pub const INVALID_FENCING: &str = "InvalidFencing";
    /// js7: the sidecar SIGKILLed its pod's JOC JVM (it must not run
    /// services: no lease, or hung after being JOC's active member).
    pub const JOC_FENCED: &str = "JocFenced";
    /// js7: the sidecar could not fence its pod's JOC JVM.
    pub const JOC_FENCE_FAILED: &str = "JocFenceFailed";
    /// Degraded: an object of a name the cluster needs exists and belongs
    /// to another controller (or none); the operator leaves it alone.
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// Degraded: members are running but none has been active for longer
    /// than the grace period.
    pub const NO_ACTIVE_MEMBER: &str = "NoActiveMember";
    /// Degraded: a StatefulSet of the cluster cannot create its pods
    /// (its `FailedCreate` Event: a quota, an admission policy, ...).
    pub const POD_CREATE_FAILED: &str = "PodCreateFailed";
    /// Degraded: the sidecars cannot log in to the database.
    pub const DATABASE_LOGIN_FAILED: &str = "DatabaseLoginFailed";
    /// Degraded (js7): the database belongs to another JocCluster (JOC
    /// keeps one cluster per database); this cluster's sidecars do not join.
    pub const DATABASE_IN_USE: &str = "DatabaseInUse";
    /// Degraded/Available: nothing wrong found.
    pub const AS_EXPECTED: &str = "AsExpected";
}

/// The longest JocCluster name whose every derived name and label value
/// fits Kubernetes' limits. The tightest is the API servers' StatefulSet
/// `<name>-api`: the StatefulSet controller labels its pods
/// `controller-revision-hash=<name>-api-<hash>` (hash: up to 10 characters,
/// a 32-bit number in decimal), and a label value has at most 63 characters:
/// 63 - 4 - 11 = 48. Checked against every derived name in the tests below;
/// the CRD refuses longer names (`x-kubernetes-validations` on the root).
pub const MAX_CLUSTER_NAME_LEN: usize = 48;

/// Longest hash the StatefulSet controller appends to a revision name.
pub const REVISION_HASH_MAX_LEN: usize = 10;

/// A JocCluster's name must be a DNS-1035 label because it names Services.
pub const CLUSTER_NAME_PATTERN: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";

/// Service routing to the active member only.
pub fn active_service_name(cluster: &str) -> String {
    cluster.to_owned()
}

/// Service routing to every member.
pub fn members_service_name(cluster: &str) -> String {
    format!("{cluster}-members")
}

/// Service routing to the API-server instances.
pub fn api_service_name(cluster: &str) -> String {
    format!("{cluster}-api")
}

/// Headless Service governing the members' StatefulSet (stable pod names).
pub fn headless_service_name(cluster: &str) -> String {
    format!("{cluster}-headless")
}

/// StatefulSet of the members; pods are `<cluster>-<ordinal>`.
pub fn members_statefulset_name(cluster: &str) -> String {
    cluster.to_owned()
}

/// StatefulSet of the API-server instances; pods are `<cluster>-api-<ordinal>`
/// (stable names give each its own stable JOC `ordering`, see
/// [`pod::API_SERVER_ORDERING_OFFSET`]).
pub fn api_server_statefulset_name(cluster: &str) -> String {
    format!("{cluster}-api")
}

/// Deployment of the API-server instances of joc-ha releases before the
/// API servers became a StatefulSet; the operator deletes it (if the
/// JocCluster owns it) when it finds one.
pub fn legacy_api_server_deployment_name(cluster: &str) -> String {
    format!("{cluster}-api")
}

/// ConfigMap of the JOC configuration that joc-ha releases before the
/// image-files layout wrote; the operator deletes it (if the JocCluster owns
/// it). JOC's settings are now arguments of the `joc-config` init container,
/// so that a change rolls the pods out.
pub fn legacy_joc_config_map_name(cluster: &str) -> String {
    format!("{cluster}-joc-config")
}

/// Suffix of the sidecars' ServiceAccount; the chart's admission policy
/// recognizes sidecar requests by it.
pub const SIDECAR_SERVICE_ACCOUNT_SUFFIX: &str = "-joc-ha-sidecar";

/// ServiceAccount (and Role, RoleBinding) the sidecars run as.
pub fn sidecar_service_account_name(cluster: &str) -> String {
    format!("{cluster}{SIDECAR_SERVICE_ACCOUNT_SUFFIX}")
}

/// The sidecar's configuration contract: environment variables the operator
/// sets on the sidecar container and the sidecar reads.
pub mod sidecar_env {
    pub const POD_NAME: &str = "JOC_HA_POD_NAME";
    pub const NAMESPACE: &str = "JOC_HA_NAMESPACE";
    pub const CLUSTER: &str = "JOC_HA_CLUSTER";
    pub const DATABASE_TYPE: &str = "JOC_HA_DATABASE_TYPE";
    /// A full URL; when absent the sidecar composes one from the parts below.
    pub const DATABASE_URL: &str = "JOC_HA_DATABASE_URL";
    pub const DATABASE_HOST: &str = "JOC_HA_DATABASE_HOST";
    pub const DATABASE_PORT: &str = "JOC_HA_DATABASE_PORT";
    pub const DATABASE_NAME: &str = "JOC_HA_DATABASE_NAME";
    pub const DATABASE_USER: &str = "JOC_HA_DATABASE_USER";
    pub const DATABASE_PASSWORD: &str = "JOC_HA_DATABASE_PASSWORD";
    pub const DATABASE_TLS_MODE: &str = "JOC_HA_DATABASE_TLS_MODE";
    pub const LEASE_TTL: &str = "JOC_HA_LEASE_TTL";
    pub const RENEW_INTERVAL: &str = "JOC_HA_RENEW_INTERVAL";
    pub const ROLE_DIR: &str = "JOC_HA_ROLE_DIR";
    pub const HTTP_ADDR: &str = "JOC_HA_HTTP_ADDR";
    /// The loopback-only listener (`/role`, `/prestop`); must be a loopback
    /// address. Also read by `joc-ha-sidecar prestop`.
    pub const LOCAL_ADDR: &str = "JOC_HA_LOCAL_ADDR";
    pub const LOG_FORMAT: &str = "JOC_HA_LOG_FORMAT";
    /// `js7` or `generic`.
    pub const WORKLOAD: &str = "JOC_HA_WORKLOAD";
    /// js7: JOC's data directory (part of its member id).
    pub const JOC_DATA_DIR: &str = "JOC_HA_JOC_DATA_DIR";
    /// js7: JOC's `cluster_polling_interval`, seconds.
    pub const JOC_POLLING_INTERVAL: &str = "JOC_HA_JOC_POLLING_INTERVAL";
    /// js7: JOC's `cluster_heart_beat_exceeded_interval`, seconds.
    pub const JOC_HEART_BEAT_EXCEEDED_INTERVAL: &str = "JOC_HA_JOC_HEART_BEAT_EXCEEDED_INTERVAL";
    /// js7: `true` when a JS7 license is given (`spec.license`), else
    /// `false`. Without a license JOC does not start services on a switch
    /// target, so the sidecar must never write a switch request.
    pub const JOC_LICENSED: &str = "JOC_HA_JOC_LICENSED";
    /// js7: JOC's JETTY_BASE as its JVM's command line names it
    /// (`-Djetty.base=`): how the sidecar finds the JVM to fence.
    pub const JOC_JETTY_BASE: &str = "JOC_HA_JOC_JETTY_BASE";
    /// js7: `false` switches fencing off (the sidecar then never signals JOC).
    pub const JOC_FENCE: &str = "JOC_HA_JOC_FENCE";
    /// js7: seconds JOC sleeps before it looks again for a registered
    /// Controller (docs/joc-facts.md fact 9; 60 in JOC's code).
    pub const JOC_CONTROLLERS_RETRY: &str = "JOC_HA_JOC_CONTROLLERS_RETRY";
    /// The CA certificate file (PEM) of the database, when
    /// `spec.database.tls.caSecretRef` is set.
    pub const DATABASE_CA_FILE: &str = "JOC_HA_DATABASE_CA_FILE";
}

/// Environment of the cockpit container (js7 mode) read by the image's
/// entrypoint and by JOC (docs/joc-facts.md 3, 6, 7).
pub mod cockpit_env {
    /// Jetty's HTTP port; the entrypoint switches the listener off when empty.
    pub const HTTP_PORT: &str = "RUN_JS_HTTP_PORT";
    /// Jetty's HTTPS port; always empty (HTTPS is refused at apply time).
    pub const HTTPS_PORT: &str = "RUN_JS_HTTPS_PORT";
    /// Added to the JVM options by the entrypoint.
    pub const JAVA_OPTIONS: &str = "RUN_JS_JAVA_OPTIONS";
    /// Filled into `${JS7_DBMS_PASSWORD}` of `hibernate.cfg.xml`.
    pub const DBMS_PASSWORD: &str = "JS7_DBMS_PASSWORD";
    /// Filled into `${JS7_DBMS_USER}` of `hibernate.cfg.xml`.
    pub const DBMS_USER: &str = "JS7_DBMS_USER";
    /// The first part of JOC's member id: the pod name.
    pub const HOSTNAME: &str = "HOSTNAME";
}

/// Keys of the license Secret (`spec.license.secretRef`).
pub mod license_key {
    /// SOS's license checker, installed by the entrypoint into `lib/ext/joc`.
    pub const JAR: &str = "js7-license.jar";
}

/// Keys of the database Secret a JocCluster names.
pub mod secret_key {
    pub const URL: &str = "url";
    pub const HOST: &str = "host";
    pub const PORT: &str = "port";
    pub const DATABASE: &str = "database";
    pub const USER: &str = "user";
    pub const PASSWORD: &str = "password";
}

/// Ports and paths of the pods the operator builds.
pub mod pod {
    /// Container names.
    pub const COCKPIT_CONTAINER: &str = "joc";
    pub const SIDECAR_CONTAINER: &str = "joc-ha-sidecar";
    /// The sidecar's pod port: /healthz, /readyz, /metrics only.
    pub const SIDECAR_PORT: i32 = 9086;
    pub const SIDECAR_PORT_NAME: &str = "sidecar";
    /// The sidecar's loopback-only port (127.0.0.1): /role and /prestop,
    /// which nothing outside the pod may call (README "What joc-ha refuses,
    /// and why", case 1).
    pub const SIDECAR_LOCAL_PORT: i32 = 9087;
    /// Init container that copies the sidecar's executable into
    /// [`HOOK_BIN_VOLUME`], for the cockpit's preStop `exec` hook.
    pub const HOOK_INIT_CONTAINER: &str = "joc-ha-hook";
    /// In-memory volume holding that copy; read-only in the cockpit.
    pub const HOOK_BIN_VOLUME: &str = "joc-ha-bin";
    /// Where that volume is mounted (init container and cockpit).
    pub const HOOK_BIN_DIR: &str = "/var/run/joc-ha-bin";
    /// The copy's file name in [`HOOK_BIN_DIR`].
    pub const HOOK_BIN: &str = "joc-ha-sidecar";
    /// The volume's size limit: the image's static sidecar binary is about
    /// 12 MB; room for it to grow.
    pub const HOOK_BIN_SIZE_LIMIT: &str = "32Mi";
    /// Where the sidecar writes the role file, shared with the cockpit.
    pub const ROLE_DIR: &str = "/var/run/joc-ha";
    pub const ROLE_VOLUME: &str = "joc-ha-role";
    /// JOC's configuration folder in the sosberlin/js7 image.
    pub const JOC_RESOURCES_DIR: &str = "/var/sos-berlin.com/js7/joc/resources/joc";
    /// Below JETTY_BASE (the JOC data directory): JOC's configuration folder.
    pub const RESOURCES_SUBDIR: &str = "resources/joc";
    /// Below JETTY_BASE: the class path folder holding `joc-settings.properties`.
    pub const CLASSES_SUBDIR: &str = "webapps/joc/WEB-INF/classes";
    /// The user's own files (`spec.config`).
    pub const CONFIG_VOLUME: &str = "joc-config";
    /// js7 (contract with the stand-in): in-memory volume holding JOC's
    /// configuration folder, mounted read-write at
    /// `$JETTY_BASE/resources/joc` in the cockpit container.
    pub const RESOURCES_VOLUME: &str = "joc-resources";
    /// js7: in-memory volume holding `joc-settings.properties`, mounted by
    /// `subPath` at `$JETTY_BASE/webapps/joc/WEB-INF/classes/`.
    pub const CLASSES_VOLUME: &str = "joc-classes";
    /// js7: the init container running the cockpit image that copies the
    /// image's own files into [`RESOURCES_VOLUME`] and [`CLASSES_VOLUME`].
    pub const JOC_IMAGE_FILES_INIT_CONTAINER: &str = "joc-image-files";
    /// js7: the init container (sidecar image, `render-joc-config`) that
    /// merges and writes JOC's files over the image's.
    pub const JOC_CONFIG_INIT_CONTAINER: &str = "joc-config";
    /// Where both init containers mount [`RESOURCES_VOLUME`].
    pub const IMAGE_RESOURCES_DIR: &str = "/joc-ha/image/resources";
    /// Where both init containers mount [`CLASSES_VOLUME`].
    pub const IMAGE_CLASSES_DIR: &str = "/joc-ha/image/classes";
    /// js7: the license Secret (`spec.license`), in the `joc-config` init container.
    pub const LICENSE_VOLUME: &str = "joc-license";
    pub const LICENSE_DIR: &str = "/etc/joc-ha/license";
    /// The user's files (`spec.config`) in the `joc-config` init container.
    pub const USER_CONFIG_DIR: &str = "/etc/joc-ha/user-config";
    /// The database CA Secret (`spec.database.tls.caSecretRef`), at the same
    /// path in the sidecar, the `joc-config` init container and the cockpit.
    pub const DATABASE_CA_VOLUME: &str = "database-ca";
    pub const DATABASE_CA_DIR: &str = "/etc/joc-ha/database-ca";
    /// Key of the CA Secret and file name below [`DATABASE_CA_DIR`].
    pub const DATABASE_CA_KEY: &str = "ca.crt";
    /// JOC's `ordering` (0–99, unique among live instances): a member's is
    /// its StatefulSet ordinal (0–8); an API server's is this plus its
    /// ordinal in the StatefulSet `<name>-api` (50–69).
    pub const API_SERVER_ORDERING_OFFSET: u32 = 50;
    /// Before the image-files layout: the in-memory volume with the
    /// rendered files (kept for the harness until the stand-in stream's
    /// merge; the operator no longer renders it).
    pub const RENDERED_CONFIG_VOLUME: &str = "joc-config-rendered";
    pub const JOC_PROPERTIES: &str = "joc.properties";
    pub const JOC_SETTINGS_PROPERTIES: &str = "joc-settings.properties";
    pub const HIBERNATE_CFG: &str = "hibernate.cfg.xml";
    pub const LOG_VOLUME: &str = "logs";
    pub const HTTP_PORT_NAME: &str = "http";
    pub const HTTPS_PORT_NAME: &str = "https";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every object name and label value derived from a cluster name, with
    /// its limit: DNS-1035 labels (Services) and label values have 63
    /// characters, pod names become host names (63), the rest are DNS
    /// subdomains (253).
    fn derived(name: &str) -> Vec<(String, usize)> {
        let max_member = format!("{}-{}", members_statefulset_name(name), 8);
        let max_api = format!("{}-{}", api_server_statefulset_name(name), 19);
        let revision = |sts: String| format!("{sts}-{}", "9".repeat(REVISION_HASH_MAX_LEN));
        vec![
            (active_service_name(name), 63),
            (members_service_name(name), 63),
            (api_service_name(name), 63),
            (headless_service_name(name), 63),
            (members_statefulset_name(name), 63),
            (api_server_statefulset_name(name), 63),
            (legacy_joc_config_map_name(name), 253),
            (sidecar_service_account_name(name), 253),
            // Pod names (host names) and the pod-name label.
            (max_member, 63),
            (max_api, 63),
            // The controller-revision-hash label of each StatefulSet's pods.
            (revision(members_statefulset_name(name)), 63),
            (revision(api_server_statefulset_name(name)), 63),
            // The cluster and instance labels.
            (name.to_owned(), 63),
        ]
    }

    #[test]
    fn the_longest_allowed_name_fits_every_derived_name() {
        let longest = "a".repeat(MAX_CLUSTER_NAME_LEN);
        for (derived, limit) in derived(&longest) {
            assert!(
                derived.len() <= limit,
                "{derived}: {} > {limit}",
                derived.len()
            );
        }
        // And one more character does not: the bound is tight.
        let longer = "a".repeat(MAX_CLUSTER_NAME_LEN + 1);
        assert!(derived(&longer).iter().any(|(d, limit)| d.len() > *limit));
    }
}
