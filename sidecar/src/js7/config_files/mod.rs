//! JOC's configuration files, written by the js7 pods' `joc-config` init
//! container over the files the image ships (copied before by the
//! `joc-image-files` init container, which runs the cockpit image):
//!
//! * `joc.properties`: every key of the image's file is kept (its log
//!   configuration, for one: docs/joc-facts.md 4), the user's own keys
//!   (`spec.config`) are merged over them, and the operator's are set last:
//!   JOC's cluster timings, `cluster_id`, `create_db_tables`, and this pod's
//!   `ordering` (JOC refuses to start without one, fact 2).
//! * `hibernate.cfg.xml`: the database of the lease Secret, so JOC and the
//!   sidecars always use one database; the password is written as
//!   `${JS7_DBMS_PASSWORD}` (and the user as `${JS7_DBMS_USER}`), which JOC
//!   fills from the cockpit container's environment (fact 7), so it is in no
//!   file.
//! * `joc-settings.properties` (JOC's class path): `as_api_server` and
//!   `security_level` (fact 1), the image's other keys kept.
//! * the license (`spec.license`): the key files into `license/`, the
//!   license checker into `lib/js7-license.jar`, where the image's entrypoint
//!   installs it from (fact 3).

mod hibernate;
mod license;
mod properties;

pub use hibernate::hibernate_cfg_xml;
use license::install_license;
pub use properties::PropertiesFile;

use std::path::Path;

use crate::config::{DatabaseKind, Flags, RenderArgs};

/// The keys the init container makes sure of in `joc.properties` when the
/// image's (or the user's) file lacks them: without `log4j.configuration`
/// JOC loads no log configuration (docs/joc-facts.md 4).
const DEFAULT_KEYS: [(&str, &str); 2] = [
    ("log4j.configuration", "log4j2.xml"),
    ("hibernate_configuration_file", "hibernate.cfg.xml"),
];

/// JOC's security level when neither the spec nor the image names one
/// (SOS's `Globals.getJocSecurityLevel` defaults to low).
const DEFAULT_SECURITY_LEVEL: &str = "low";

/// Why the files could not be written; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("the database URL {url} cannot be turned into a JDBC URL: {reason}")]
    Url { url: String, reason: String },
    #[error("the database URL {url} names its user both in the user info and as ?user=; keep one")]
    AmbiguousUser { url: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "JOC's ordering: {0}; JOC needs an `ordering` from 0 to 99, unique among its instances (members: the StatefulSet ordinal, API servers: 50 + ordinal)"
    )]
    Ordering(String),
    #[error(
        "the license Secret mounted at {dir} {problem}: give it the key js7-license.jar and the license key file(s) from SOS (see spec.license)"
    )]
    License { dir: String, problem: String },
}

// ---------------------------------------------------------------------------
// Ordering
// ---------------------------------------------------------------------------

/// JOC's `ordering` of a pod: `offset` + the StatefulSet ordinal at the end
/// of its name (`joc-2` → 2, `joc-api-1` with offset 50 → 51). SOS's
/// `Globals.getOrdering` refuses a value outside 0–99 and `CheckInstance`
/// refuses a second live instance with the same one, so members (0–8) and
/// API servers (50–69) never collide and keep theirs across restarts.
pub fn ordering_of(pod_name: &str, offset: u32) -> Result<u32, ConfigFileError> {
    let ordinal = pod_name
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<u32>().ok())
        .ok_or_else(|| {
            ConfigFileError::Ordering(format!(
                "the pod name {pod_name:?} does not end in a StatefulSet ordinal"
            ))
        })?;
    let ordering = offset.saturating_add(ordinal);
    if ordering > 99 {
        return Err(ConfigFileError::Ordering(format!(
            "pod {pod_name:?} would get {ordering}"
        )));
    }
    Ok(ordering)
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

fn read_optional(path: &Path) -> Result<Option<String>, ConfigFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigFileError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Writes `bytes` to `path` atomically (a temporary file in the same folder,
/// then a rename) with `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ConfigFileError> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let error = |source| ConfigFileError::Write {
        path: path.display().to_string(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.joc-ha.tmp"));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    // The umask may have narrowed the mode; JOC must read what it needs.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(error)
}

fn create_dir(path: &Path) -> Result<(), ConfigFileError> {
    std::fs::create_dir_all(path).map_err(|source| ConfigFileError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// The `joc-config` init container: merges and writes JOC's files into
/// `args.out_dir` (JOC's resources folder, holding the image's files) and
/// `args.classes_dir`, then returns. Notes (where a credential had to go
/// into a file, what was left out) go to stderr; they never hold a
/// credential.
pub fn render_joc_config(
    url: &str,
    kind: DatabaseKind,
    flags: &Flags,
    args: &RenderArgs,
) -> Result<(), ConfigFileError> {
    let mut notes = Vec::new();
    let resources = &args.out_dir;

    // joc.properties: the image's, the user's over it, ours over both.
    let properties_path = resources.join("joc.properties");
    let image_properties = read_optional(&properties_path)?;
    if image_properties.is_none() {
        notes.push(format!(
            "{} does not exist: the image's files were not copied (init container joc-image-files), or the image ships none",
            properties_path.display()
        ));
    }
    let mut properties = PropertiesFile::parse(image_properties.as_deref().unwrap_or_default());
    let user_dir = args.user_config_dir.as_deref();
    if let Some(user) = user_dir
        .map(|d| d.join("joc.properties"))
        .map(|p| read_optional(&p))
        .transpose()?
        .flatten()
    {
        properties.merge(&PropertiesFile::parse(&user));
    }
    for (key, value) in DEFAULT_KEYS {
        properties.set_default(key, value);
    }
    if properties.get("hibernate_configuration_file").as_deref() != Some("hibernate.cfg.xml") {
        notes.push(
            "hibernate_configuration_file is set to hibernate.cfg.xml, the file joc-ha writes"
                .to_owned(),
        );
        properties.set("hibernate_configuration_file", "hibernate.cfg.xml");
    }
    for (key, value) in &args.properties {
        properties.set(key, value);
    }
    let pod_name = flags
        .pod_name
        .as_deref()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| {
            ConfigFileError::Ordering("JOC_HA_POD_NAME (--pod-name) is not set".to_owned())
        })?;
    let ordering = ordering_of(pod_name, args.ordering_offset)?;
    properties.set("ordering", &ordering.to_string());

    // hibernate.cfg.xml: the user's as given, else ours from the Secret.
    let user_xml_path = user_dir.map(|d| d.join("hibernate.cfg.xml"));
    let user_xml = user_xml_path
        .as_deref()
        .map(read_optional)
        .transpose()?
        .flatten();
    let xml = match user_xml {
        Some(xml) => xml,
        None => hibernate_cfg_xml(
            url,
            kind,
            flags.database_user.as_deref(),
            flags.database_password.as_deref(),
            &mut notes,
        )?,
    };

    // joc-settings.properties: the API-server flag and the security level.
    let mut settings = None;
    if let Some(classes) = &args.classes_dir {
        let path = classes.join("joc-settings.properties");
        let mut file = PropertiesFile::parse(read_optional(&path)?.as_deref().unwrap_or_default());
        file.set("as_api_server", if args.api_server { "yes" } else { "no" });
        match &args.security_level {
            Some(level) => file.set("security_level", level),
            None => file.set_default("security_level", DEFAULT_SECURITY_LEVEL),
        }
        settings = Some((path, file));
    }

    let license = match &args.license_dir {
        Some(dir) => install_license(dir, resources)?,
        None => Vec::new(),
    };
    write_file(&resources.join("hibernate.cfg.xml"), xml.as_bytes(), 0o600)?;
    write_file(&properties_path, properties.render().as_bytes(), 0o644)?;
    if let Some((path, file)) = settings {
        write_file(&path, file.render().as_bytes(), 0o644)?;
    }
    eprintln!(
        "joc-ha-sidecar: joc.properties: ordering = {ordering}{}",
        if args.api_server { " (API server)" } else { "" }
    );
    for written in license {
        eprintln!("joc-ha-sidecar: license: wrote {written}");
    }
    for note in notes {
        eprintln!("joc-ha-sidecar: note: {note}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn ordering_from_the_pod_name() {
        let cases: &[(&str, u32, Option<u32>)] = &[
            ("joc-0", 0, Some(0)),
            ("joc-8", 0, Some(8)),
            ("my-joc-3", 0, Some(3)),
            ("joc-api-0", 50, Some(50)),
            ("joc-api-19", 50, Some(69)),
            ("joc-api-50", 50, None),
            ("joc", 0, None),
            ("joc-api-7f9c", 50, None),
        ];
        for (pod, offset, want) in cases {
            assert_eq!(ordering_of(pod, *offset).ok(), *want, "{pod} + {offset}");
        }
    }

    fn flags(pod: &str, extra: &[&str]) -> Flags {
        let mut args = vec!["joc-ha-sidecar", "--pod-name", pod];
        args.extend_from_slice(extra);
        Flags::try_parse_from(args).expect("flags")
    }

    fn render_args(dir: &Path, extra: &[&str]) -> RenderArgs {
        let resources = dir.join("resources");
        let classes = dir.join("classes");
        let mut args = vec![
            "joc-ha-sidecar".to_owned(),
            "render-joc-config".to_owned(),
            "--out-dir".to_owned(),
            resources.display().to_string(),
            "--classes-dir".to_owned(),
            classes.display().to_string(),
            "--property".to_owned(),
            "cluster_polling_interval=1".to_owned(),
            "--property".to_owned(),
            "create_db_tables=true".to_owned(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        match Flags::try_parse_from(args).expect("args").command {
            Some(crate::config::Command::RenderJocConfig(args)) => args,
            None => panic!("no subcommand"),
        }
    }

    fn image_files(dir: &Path) {
        std::fs::create_dir_all(dir.join("resources")).expect("mkdir");
        std::fs::create_dir_all(dir.join("classes")).expect("mkdir");
        std::fs::write(
            dir.join("resources/joc.properties"),
            "log4j.configuration = log4j2.xml\nhibernate_configuration_file = hibernate.cfg.xml\nkeystore_path = x\n",
        )
        .expect("write");
        std::fs::write(
            dir.join("classes/joc-settings.properties"),
            "security_level = medium\nprev_as_api_server = no\n",
        )
        .expect("write");
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn a_member_keeps_the_images_files_and_gets_its_ordering() {
        let dir = tempfile::tempdir().expect("tempdir");
        image_files(dir.path());
        let args = render_args(dir.path(), &[]);
        render_joc_config(
            "postgres://joc:pw@db/js7",
            DatabaseKind::Postgresql,
            &flags(
                "joc-2",
                &["--database-user", "joc", "--database-password", "pw"],
            ),
            &args,
        )
        .expect("rendered");
        let properties = PropertiesFile::parse(
            &std::fs::read_to_string(dir.path().join("resources/joc.properties")).expect("read"),
        );
        for (key, want) in [
            ("log4j.configuration", "log4j2.xml"),
            ("hibernate_configuration_file", "hibernate.cfg.xml"),
            ("keystore_path", "x"),
            ("cluster_polling_interval", "1"),
            ("create_db_tables", "true"),
            ("ordering", "2"),
        ] {
            assert_eq!(properties.get(key).as_deref(), Some(want), "{key}");
        }
        let settings = PropertiesFile::parse(
            &std::fs::read_to_string(dir.path().join("classes/joc-settings.properties"))
                .expect("read"),
        );
        assert_eq!(settings.get("as_api_server").as_deref(), Some("no"));
        assert_eq!(
            settings.get("security_level").as_deref(),
            Some("medium"),
            "the image's level is kept"
        );
        assert_eq!(settings.get("prev_as_api_server").as_deref(), Some("no"));
        let xml_path = dir.path().join("resources/hibernate.cfg.xml");
        let xml = std::fs::read_to_string(&xml_path).expect("xml");
        assert!(!xml.contains(">pw<"), "the password is in no file: {xml}");
        assert!(xml.contains("${JS7_DBMS_PASSWORD}"));
        assert_eq!(mode(&xml_path), 0o600);
        assert_eq!(mode(&dir.path().join("resources/joc.properties")), 0o644);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("resources"))
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(
            leftovers.is_empty(),
            "no temporary file stays: {leftovers:?}"
        );
    }

    #[test]
    fn an_api_server_with_a_level_user_files_and_a_license() {
        let dir = tempfile::tempdir().expect("tempdir");
        image_files(dir.path());
        let user = dir.path().join("user");
        std::fs::create_dir_all(&user).expect("mkdir");
        std::fs::write(
            user.join("joc.properties"),
            "keystore_path = mine\nordering = 5\n",
        )
        .expect("write");
        let license = dir.path().join("license");
        std::fs::create_dir_all(license.join("..2026_12_01")).expect("mkdir");
        std::fs::write(license.join("js7-license.jar"), b"jar").expect("write");
        std::fs::write(license.join("js7-license.pem"), b"key").expect("write");
        let args = render_args(
            dir.path(),
            &[
                "--api-server",
                "--ordering-offset",
                "50",
                "--security-level",
                "high",
                "--user-config-dir",
                &user.display().to_string(),
                "--license-dir",
                &license.display().to_string(),
            ],
        );
        render_joc_config(
            "sqlite:///tmp/x.db",
            DatabaseKind::Sqlite,
            &flags("joc-api-1", &[]),
            &args,
        )
        .expect("rendered");
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).expect(p);
        let properties = PropertiesFile::parse(&read("resources/joc.properties"));
        assert_eq!(
            properties.get("keystore_path").as_deref(),
            Some("mine"),
            "the user's key wins over the image's"
        );
        assert_eq!(
            properties.get("ordering").as_deref(),
            Some("51"),
            "ours win over the user's"
        );
        let settings = PropertiesFile::parse(&read("classes/joc-settings.properties"));
        assert_eq!(settings.get("as_api_server").as_deref(), Some("yes"));
        assert_eq!(settings.get("security_level").as_deref(), Some("high"));
        assert_eq!(read("resources/lib/js7-license.jar"), "jar");
        assert_eq!(read("resources/license/js7-license.pem"), "key");
        assert!(
            !dir.path()
                .join("resources/license/js7-license.jar")
                .exists()
        );
        assert!(read("resources/hibernate.cfg.xml").contains("jdbc:sqlite:/tmp/x.db"));
    }

    #[test]
    fn missing_image_files_default_and_a_bad_license_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("resources")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("classes")).expect("mkdir");
        let args = render_args(dir.path(), &[]);
        render_joc_config(
            "sqlite:///tmp/x.db",
            DatabaseKind::Sqlite,
            &flags("joc-0", &[]),
            &args,
        )
        .expect("rendered");
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).expect(p);
        let properties = PropertiesFile::parse(&read("resources/joc.properties"));
        assert_eq!(
            properties.get("log4j.configuration").as_deref(),
            Some("log4j2.xml")
        );
        assert_eq!(properties.get("ordering").as_deref(), Some("0"));
        let settings = PropertiesFile::parse(&read("classes/joc-settings.properties"));
        assert_eq!(settings.get("security_level").as_deref(), Some("low"));

        let license = dir.path().join("license");
        std::fs::create_dir_all(&license).expect("mkdir");
        std::fs::write(license.join("js7-license.pem"), b"key").expect("write");
        let args = render_args(
            dir.path(),
            &["--license-dir", &license.display().to_string()],
        );
        let error = render_joc_config(
            "sqlite:///tmp/x.db",
            DatabaseKind::Sqlite,
            &flags("joc-0", &[]),
            &args,
        )
        .expect_err("no jar");
        assert!(error.to_string().contains("js7-license.jar"), "{error}");
        let error = render_joc_config(
            "sqlite:///tmp/x.db",
            DatabaseKind::Sqlite,
            &flags("joc", &[]),
            &render_args(dir.path(), &[]),
        )
        .expect_err("no ordinal");
        assert!(error.to_string().contains("ordering"), "{error}");
    }
}
