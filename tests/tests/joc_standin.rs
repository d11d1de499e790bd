//! The JOC stand-in (`joc-standin`, `joc_ha_tests::joc`) behaves like the
//! JOC Cockpit image and its cluster service as docs/joc-facts.md
//! has them, on PostgreSQL and MariaDB: the entrypoint, the servlet's start-up
//! refusals, the fresh-install block, the no-license mode, switch requests
//! (stale, to an API server, lost in the rewrite race), a freeze in the
//! middle of a start, clean shutdown, start-up delay. Plus unit tests of the
//! configuration readers and the member id.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use joc_ha_tests::agreement::{FaultWindow, Frozen, now_ns, services_report};
use joc_ha_tests::db::{Backend, TestDb, free_port};
use joc_ha_tests::joc::{self, HibernateConfig, JocProperties, JocSettings, SecurityLevel};
use joc_ha_tests::process::ManagedProcess;
use joc_ha_tests::stack::workspace_binary;
use joc_ha_tests::wait::{http_get, http_get_status, wait_for_ok};
use serde_json::Value;

/// Short timings written into joc.properties.
const POLL_S: u64 = 1;
const EXCEEDED_S: u64 = 3;
const CHECK: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// Unit tests: configuration and member id
// ---------------------------------------------------------------------------

#[test]
fn member_id_is_hostname_and_sha256_of_the_data_directory() {
    // printf '%s' /var/sos-berlin.com/js7/joc | sha256sum
    let expected = "joc-0:97c88ccc3975703ebd0b7277d394ec8768f88b31775e8df038572d2547c240a0";
    assert_eq!(
        joc::member_id("joc-0", "/var/sos-berlin.com/js7/joc"),
        expected
    );
    // Paths.get(..).toString() drops a trailing slash and doubled slashes.
    assert_eq!(
        joc::member_id("joc-0", "/var/sos-berlin.com//js7/joc/"),
        expected
    );
    assert_eq!(joc::java_path_string("/"), "/");
}

#[test]
fn jdbc_urls_become_sqlx_urls() -> Result<()> {
    assert_eq!(
        joc::jdbc_to_sqlx_url(
            "jdbc:postgresql://db.example:5432/js7?sslmode=disable",
            Some("scheduler"),
            Some("p@ss:w/rd%")
        )?,
        "postgres://scheduler:p%40ss%3Aw%2Frd%25@db.example:5432/js7?sslmode=disable"
    );
    assert_eq!(
        joc::jdbc_to_sqlx_url("jdbc:mariadb://localhost:3306/js7_x", Some("u"), Some("p"))?,
        "mysql://u:p@localhost:3306/js7_x"
    );
    assert_eq!(
        joc::jdbc_to_sqlx_url("jdbc:mysql://localhost/js7", Some("u"), None)?,
        "mysql://u@localhost/js7"
    );
    assert_eq!(
        joc::jdbc_to_sqlx_url("jdbc:sqlite:/var/lib/joc/joc.db", None, None)?,
        "sqlite:///var/lib/joc/joc.db?mode=rwc"
    );
    assert!(joc::jdbc_to_sqlx_url("jdbc:h2:mem:x", None, None).is_err());
    assert!(joc::jdbc_to_sqlx_url("postgres://x/y", None, None).is_err());
    // Round trip used by the tests' resources writer.
    let (jdbc, user, password) = joc::sqlx_to_jdbc("postgres://joc_ha:s%40cret@127.0.0.1:5/d")?;
    assert_eq!(jdbc, "jdbc:postgresql://127.0.0.1:5/d");
    assert_eq!(user.as_deref(), Some("joc_ha"));
    assert_eq!(password.as_deref(), Some("s@cret"));
    assert_eq!(
        joc::redact_url("postgres://joc_ha:secret@h:5/d"),
        "postgres://joc_ha:***@h:5/d"
    );
    Ok(())
}

#[test]
fn hibernate_cfg_both_styles_and_js7_placeholders() -> Result<()> {
    let legacy = r#"<?xml version="1.0" encoding="UTF-8"?>
<hibernate-configuration>
  <session-factory>
    <property name="hibernate.dialect">org.hibernate.dialect.PostgreSQLDialect</property>
    <!-- <property name="hibernate.connection.url">jdbc:postgresql://old/commented</property> -->
    <property name="hibernate.connection.url">jdbc:postgresql://localhost:5432/js7_x${JS7_DBMS_URL_PARAMETER}</property>
    <property name="hibernate.connection.username">${JS7_DBMS_USER}</property>
    <property name="hibernate.connection.password">${JS7_DBMS_PASSWORD}</property>
  </session-factory>
</hibernate-configuration>"#;
    let cfg = HibernateConfig::parse(legacy)?;
    assert_eq!(
        cfg.url,
        "jdbc:postgresql://localhost:5432/js7_x${JS7_DBMS_URL_PARAMETER}"
    );
    let env = |k: &str| match k {
        "JS7_DBMS_USER" => Some("scheduler".to_owned()),
        "JS7_DBMS_PASSWORD" => Some("se cret&".to_owned()),
        "JS7_DBMS_URL_PARAMETER" => Some("?sslmode=disable".to_owned()),
        _ => None,
    };
    let resolved = cfg.resolve_placeholders(env);
    assert_eq!(
        resolved.url,
        "jdbc:postgresql://localhost:5432/js7_x?sslmode=disable"
    );
    assert_eq!(resolved.user.as_deref(), Some("scheduler"));
    assert_eq!(
        resolved.sqlx_url()?,
        "postgres://scheduler:se%20cret%26@localhost:5432/js7_x?sslmode=disable"
    );
    assert!(
        !format!("{resolved:?}").contains("se cret"),
        "Debug must not show the password"
    );
    // Unset variables resolve to "" (SOSHibernateJS7Resolver), '&' is normalised.
    let none = cfg.resolve_placeholders(|_| None);
    assert_eq!(none.url, "jdbc:postgresql://localhost:5432/js7_x");
    assert_eq!(none.user.as_deref(), Some(""));
    let with_q = HibernateConfig {
        url: "jdbc:mariadb://h/db?a=1${JS7_DBMS_URL_PARAMETER}".to_owned(),
        user: None,
        password: None,
    }
    .resolve_placeholders(|_| Some("&b=2".to_owned()));
    assert_eq!(with_q.url, "jdbc:mariadb://h/db?a=1&b=2");

    let jakarta = r#"<hibernate-configuration><session-factory>
    <property name="hibernate.dialect">org.hibernate.dialect.MySQLDialect</property>
    <property name="jakarta.persistence.jdbc.driver">org.mariadb.jdbc.Driver</property>
    <property name="jakarta.persistence.jdbc.url">jdbc:mysql://localhost:3306/js7_x</property>
    <property name="jakarta.persistence.jdbc.user">js7</property>
    <property name="jakarta.persistence.jdbc.password">a&amp;b</property>
    </session-factory></hibernate-configuration>"#;
    let cfg = HibernateConfig::parse(jakarta)?;
    assert_eq!(cfg.sqlx_url()?, "mysql://js7:a%26b@localhost:3306/js7_x");
    assert!(HibernateConfig::parse("<hibernate-configuration/>").is_err());
    Ok(())
}

#[test]
fn joc_properties_keys_and_defaults() -> Result<()> {
    let defaults = JocProperties::parse("# nothing\n")?;
    assert_eq!(defaults, JocProperties::default());
    assert_eq!(defaults.polling_interval_s, 30);
    assert_eq!(defaults.heart_beat_exceeded_interval_s, 60);
    assert_eq!(defaults.polling_wait_interval_on_error_s, 2);
    assert_eq!(defaults.cluster_id, None);
    assert_eq!(defaults.ordering, None);
    assert!(!defaults.create_db_tables);
    // docs/joc-facts.md fact 2: no ordering → JOC refuses to start.
    assert_eq!(
        defaults.checked_ordering(),
        Err(joc::MSG_ORDERING.to_owned())
    );

    let text = "! comment\ncluster_id = api\ntitle: Primary \\\n  JOC\nordering 7\n\
                cluster_polling_interval=5\ncluster_heart_beat_exceeded_interval = 11\n\
                cluster_polling_wait_interval_on_error=1\nhibernate_configuration_file = h.xml\n";
    let p = JocProperties::parse(text)?;
    // cluster_id = api marks nothing for JOC (docs/joc-facts.md fact 1); only the legacy layout reads it.
    assert!(p.legacy_api_server());
    assert_eq!(p.title.as_deref(), Some("Primary JOC"));
    assert_eq!(p.ordering, Some(7));
    assert_eq!(p.checked_ordering(), Ok(7));
    for (text, ok) in [
        ("ordering = 0", Some(0)),
        ("ordering = 99", Some(99)),
        ("ordering = 100", None),
        ("ordering = -1", None),
        ("ordering = first", None),
    ] {
        assert_eq!(
            JocProperties::parse(text)?.checked_ordering().ok(),
            ok,
            "{text}"
        );
    }
    assert!(JocProperties::parse("create_db_tables = true")?.create_db_tables);
    assert!(!JocProperties::parse("create_db_tables = false")?.create_db_tables);
    assert_eq!(p.polling_interval_s, 5);
    assert_eq!(p.heart_beat_exceeded_interval_s, 11);
    assert_eq!(p.polling_wait_interval_on_error_s, 1);
    assert_eq!(p.hibernate_configuration_file, "h.xml");
    assert!(JocProperties::parse("cluster_polling_interval = soon\n").is_err());

    let rendered = JocProperties::parse(&joc::render_joc_properties(1, 3, "joc"))?;
    assert_eq!(rendered.polling_interval_s, 1);
    assert_eq!(rendered.heart_beat_exceeded_interval_s, 3);
    assert_eq!(rendered.cluster_id.as_deref(), Some("joc"));
    Ok(())
}

#[test]
fn joc_settings_decide_api_server_and_security_level() {
    // Globals.getJocSecurityLevel: as_api_server exactly "yes"; security_level upper-cased.
    let s = JocSettings::parse("as_api_server = yes\nsecurity_level = medium\n");
    assert!(s.api_server);
    assert_eq!(s.security_level, SecurityLevel::Medium);
    let s = JocSettings::parse("as_api_server = YES\nsecurity_level = bogus\n");
    assert!(!s.api_server, "only \"yes\" counts");
    assert_eq!(s.security_level, SecurityLevel::Low);
    assert_eq!(JocSettings::parse(""), JocSettings::default());
    assert_eq!(SecurityLevel::High.int_value(), 2);
}

#[test]
fn heart_beat_exceeded_is_whole_seconds_strictly_greater() {
    assert!(!joc::is_heart_beat_exceeded(160, Some(100), 60));
    assert!(joc::is_heart_beat_exceeded(161, Some(100), 60));
    assert!(joc::is_heart_beat_exceeded(0, None, 60));
}

// ---------------------------------------------------------------------------
// Stand-in processes on the image's layout (--jetty-base)
// ---------------------------------------------------------------------------

/// What goes into one stand-in's fake JETTY_BASE.
#[derive(Clone)]
struct BaseOpts {
    ordering: Option<&'static str>,
    api_server: bool,
    licensed: bool,
    create_db_tables: bool,
}

impl Default for BaseOpts {
    fn default() -> Self {
        BaseOpts {
            ordering: None,
            api_server: false,
            licensed: true,
            create_db_tables: true,
        }
    }
}

/// A JETTY_BASE as the operator's init containers leave it: joc.properties
/// (timings, `cluster_id = joc` even for API servers: JOC ignores it),
/// hibernate.cfg.xml with JOC's `${JS7_DBMS_PASSWORD}`, joc-settings.properties
/// on the classpath, and the license where the entrypoint looks.
fn write_base(dir: &Path, host: &str, url: &str, o: &BaseOpts) -> Result<PathBuf> {
    let base = dir.join(format!("base-{host}"));
    let resources = base.join("resources/joc");
    let classes = base.join("webapps/joc/WEB-INF/classes");
    std::fs::create_dir_all(&resources)?;
    std::fs::create_dir_all(&classes)?;
    let mut props = format!(
        "log4j.configuration = log4j2.xml\ncluster_id = joc\ncluster_polling_interval = {POLL_S}\n\
         cluster_heart_beat_exceeded_interval = {EXCEEDED_S}\nhibernate_configuration_file = hibernate.cfg.xml\n"
    );
    if let Some(ordering) = o.ordering {
        props.push_str(&format!("ordering = {ordering}\n"));
    }
    if o.create_db_tables {
        props.push_str("create_db_tables = true\n");
    }
    std::fs::write(resources.join("joc.properties"), props)?;
    let (jdbc, user, _password) = joc::sqlx_to_jdbc(url)?;
    std::fs::write(
        resources.join("hibernate.cfg.xml"),
        joc::render_hibernate_cfg(&jdbc, user.as_deref(), Some("${JS7_DBMS_PASSWORD}")),
    )?;
    std::fs::write(
        classes.join("joc-settings.properties"),
        format!(
            "security_level = low\nas_api_server = {}\n",
            if o.api_server { "yes" } else { "no" }
        ),
    )?;
    if o.licensed {
        std::fs::create_dir_all(resources.join("license"))?;
        std::fs::write(resources.join("license/joc.pem"), "not a real license\n")?;
        std::fs::create_dir_all(resources.join("lib"))?;
        std::fs::write(resources.join("lib/js7-license.jar"), "not a real jar\n")?;
    }
    Ok(base)
}

struct Standin {
    host: String,
    member_id: String,
    addr: String,
    base: PathBuf,
    periods: PathBuf,
    process: ManagedProcess,
}

impl Standin {
    /// A stand-in on `base` with a short start-up delay; `extra` flags after.
    fn start(dir: &Path, host: &str, base: &Path, extra: &[&str]) -> Result<Standin> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let periods = dir.join(format!("{host}.joc.jsonl"));
        let mut command = Command::new(workspace_binary("joc-standin")?);
        command
            .current_dir(dir)
            .arg("--jetty-base")
            .arg(base)
            .args(["--startup-delay", "200ms", "--controllers-retry", "1s"])
            .arg("--periods-file")
            .arg(&periods)
            .args(extra)
            .env("RUN_JS_HTTP_PORT", port.to_string())
            .env("HOSTNAME", host)
            .env("RUST_LOG", "info,sqlx=warn,joc_ha_standins::joc=debug")
            .env("JS7_DBMS_PASSWORD", joc_ha_tests::db::TEST_PASSWORD);
        let process = ManagedProcess::spawn(command, dir.join(format!("{host}.log")))?;
        // No --data-dir: the member id hashes the JETTY_BASE (user.dir).
        let data_dir = base.to_str().context("utf-8 temp path")?.to_owned();
        Ok(Standin {
            host: host.to_owned(),
            member_id: joc::member_id(host, &data_dir),
            addr,
            base: base.to_owned(),
            periods,
            process,
        })
    }

    /// `GET /` once it answers.
    async fn status(&self) -> Result<Value> {
        let (code, body) =
            http_get(&format!("http://{}/", self.addr), Duration::from_secs(2)).await?;
        ensure!(code == 200, "GET / of {} answered {code}", self.host);
        Ok(serde_json::from_str(&body)?)
    }

    async fn active(&self) -> Result<bool> {
        self.status().await?["active"]
            .as_bool()
            .context("GET / has no boolean 'active'")
    }

    /// `GET /joc/api/version`'s status (docs/joc-facts.md fact 8).
    async fn version(&self) -> Result<u16> {
        http_get_status(
            &format!("http://{}/joc/api/version", self.addr),
            Duration::from_secs(2),
        )
        .await
    }

    async fn switch_member(&self, body: &str) -> Result<(u16, Value)> {
        post_json(&self.addr, "/joc/api/joc/cluster/switch_member", body).await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }

    /// Service starts (mono ns) recorded in the periods file.
    fn events(&self, event: &str) -> Vec<i64> {
        std::fs::read_to_string(&self.periods)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == event)
            .filter_map(|v| v["mono_ns"].as_i64())
            .collect()
    }

    async fn wait_up(&self) -> Result<()> {
        wait_for_ok(
            &format!("GET /joc/api/version of {}", self.host),
            Duration::from_secs(20),
            CHECK,
            || async {
                let code = self.version().await?;
                ensure!(code == 200, "answered {code}");
                anyhow::Ok(())
            },
        )
        .await
    }

    async fn wait_exit(&self, within: Duration) -> Result<std::process::ExitStatus> {
        wait_for_ok(&format!("{} to exit", self.host), within, CHECK, || async {
            self.process.exit_status().context("still running")
        })
        .await
    }
}

async fn post_json(addr: &str, path: &str, body: &str) -> Result<(u16, Value)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .context("POST: no answer within 30 s")??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    Ok((code, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// Every member answers; exactly one says it is active, and it is JOC_CLUSTER.MEMBER_ID.
async fn one_consistent_active(url: &str, members: &[&Standin]) -> Result<String> {
    let Some(row_member) = joc::joc_active_member(url).await? else {
        bail!("no JOC_CLUSTER row yet");
    };
    let mut active = Vec::new();
    for m in members {
        if m.active().await? {
            active.push(m.member_id.clone());
        }
    }
    ensure!(
        active == [row_member.clone()],
        "JOC_CLUSTER.MEMBER_ID = {row_member}, services active on {active:?}"
    );
    Ok(row_member)
}

fn by_id<'a>(members: &'a [&'a Standin], id: &str) -> Result<&'a Standin> {
    members
        .iter()
        .copied()
        .find(|m| m.member_id == id)
        .with_context(|| format!("{id} is none of the stand-ins"))
}

/// Runs `scenario`; on failure keeps the folder and shows the logs.
async fn with_logs<F>(backend: Backend, dir: tempfile::TempDir, scenario: F) -> Result<()>
where
    F: std::future::Future<Output = Result<()>>,
{
    let started = Instant::now();
    match scenario.await {
        Ok(()) => {
            eprintln!("{}: passed in {:.1?}", backend.name(), started.elapsed());
            Ok(())
        }
        Err(error) => {
            let kept = dir.keep();
            let mut logs = String::new();
            for entry in std::fs::read_dir(&kept)?.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    logs.push_str(&format!(
                        "\n--- {} ---\n{}",
                        path.display(),
                        joc_ha_tests::process::log_tail(&path, 40)
                    ));
                }
            }
            bail!(
                "{}: {error:#}\n(kept in {}){logs}",
                backend.name(),
                kept.display()
            )
        }
    }
}

fn register(url: &str) -> impl std::future::Future<Output = Result<()>> + '_ {
    joc::register_controller(
        url,
        "controller",
        "http://controller.invalid:4444",
        SecurityLevel::Low,
    )
}

/// No two stand-ins ran services at once (from their periods files, freezes cut out).
fn assert_no_overlap(dir: &Path, frozen: &[Frozen]) -> Result<()> {
    let report = services_report(dir, frozen, now_ns())?;
    eprintln!("services: {}", report.summary());
    ensure!(
        report.overlaps.is_empty(),
        "overlaps: {:?}",
        report.overlaps
    );
    ensure!(
        report.anomalies.is_empty(),
        "anomalies: {:?}",
        report.anomalies
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// The cluster as JOC runs it (docs/joc-facts.md fact 1, 5, 11, 12, 16, 17, 18)
// ---------------------------------------------------------------------------

async fn cluster_behaves_like_joc(backend: Backend) -> Result<()> {
    let db = TestDb::start(backend).await?;
    let url = db.url();
    let dir = tempfile::Builder::new().prefix("joc-standin-").tempdir()?;
    let path = dir.path().to_owned();
    with_logs(backend, dir, async move {
        register(&url).await?;
        let member = |ordering| BaseOpts {
            ordering: Some(ordering),
            ..BaseOpts::default()
        };
        let b0 = write_base(&path, "joc-0", &url, &member("0"))?;
        let b1 = write_base(&path, "joc-1", &url, &member("1"))?;
        let b2 = write_base(&path, "joc-2", &url, &member("2"))?;
        let ba = write_base(
            &path,
            "api-0",
            &url,
            &BaseOpts {
                ordering: Some("50"),
                api_server: true,
                ..BaseOpts::default()
            },
        )?;
        let s0 = Standin::start(&path, "joc-0", &b0, &[])?;
        let s1 = Standin::start(&path, "joc-1", &b1, &[])?;
        let s2 = Standin::start(&path, "joc-2", &b2, &[])?;
        let api = Standin::start(&path, "api-0", &ba, &[])?;
        scenarios(&url, &path, &s0, &s1, &s2, &api).await
    })
    .await
}

async fn scenarios(
    url: &str,
    dir: &Path,
    s0: &Standin,
    s1: &Standin,
    s2: &Standin,
    api: &Standin,
) -> Result<()> {
    let members = [s0, s1, s2];
    for m in [s0, s1, s2, api] {
        m.wait_up().await?;
    }
    // docs/joc-facts.md fact 5: the tables were created (create_db_tables = true), and JOC
    // wrote create_db_tables = false afterwards.
    let props = std::fs::read_to_string(s0.base.join("resources/joc/joc.properties"))?;
    assert!(
        !JocProperties::parse(&props)?.create_db_tables,
        "create_db_tables reset: {props}"
    );
    assert!(
        props.contains("log4j.configuration = log4j2.xml"),
        "image keys kept: {props}"
    );

    // Three start at once: one is JOC-active, the others standby.
    let first = wait_for_ok(
        "one JOC-active stand-in",
        Duration::from_secs(20),
        CHECK,
        || one_consistent_active(url, &members),
    )
    .await?;
    // docs/joc-facts.md fact 16: a witness row JOC never reads; starts and stops of
    // services update every JOC_CLUSTER row, with no WHERE.
    joc::insert_witness_cluster_row(url, "witness").await?;
    assert_eq!(
        joc::cluster_heart_beat_of(url, "witness").await?,
        Some(946_684_800)
    );

    // docs/joc-facts.md fact 1: the API server is one by joc-settings.properties although
    // its joc.properties says cluster_id = joc.
    assert_eq!(api.status().await?["apiServer"], true);
    assert!(
        !api.active().await?,
        "an API server never runs the services"
    );
    let instances = wait_for_ok(
        "four JOC_INSTANCES rows",
        Duration::from_secs(10),
        CHECK,
        || async {
            let rows = joc::instances(url).await?;
            ensure!(rows.len() == 4, "{} rows", rows.len());
            anyhow::Ok(rows)
        },
    )
    .await?;
    let now_s = joc::db_now(url).await?;
    for row in &instances {
        let m = [s0, s1, s2, api]
            .into_iter()
            .find(|m| m.member_id == row.member_id)
            .context("instance row of an unknown member")?;
        let is_api = m.host == "api-0";
        assert_eq!(row.api_server, is_api, "API_SERVER of {}", m.host);
        assert_eq!(row.cluster_id, if is_api { "api" } else { "joc" });
        assert_eq!(
            row.title.as_deref(),
            Some(m.host.as_str()),
            "TITLE defaults to the hostname"
        );
        // docs/joc-facts.md fact 18: URI not written at start, OS_ID from INV_OPERATING_SYSTEMS,
        // TIMEZONE the JVM's, STARTED_AT from the JVM clock.
        assert_eq!(row.uri, None, "URI of {}", m.host);
        assert!(row.os_id > 0, "OS_ID of {}: {}", m.host, row.os_id);
        assert!(!row.timezone.is_empty());
        assert_eq!(row.security_level, "LOW");
        assert!(
            (now_s - row.started_at).abs() < 60,
            "STARTED_AT {} vs now {now_s}",
            row.started_at
        );
        assert!(
            row.is_fresh(EXCEEDED_S),
            "{} heartbeat age {}",
            m.host,
            row.age_s
        );
    }
    let distinct_os: std::collections::BTreeSet<i64> = instances.iter().map(|i| i.os_id).collect();
    assert_eq!(
        distinct_os.len(),
        4,
        "one INV_OPERATING_SYSTEMS row per host"
    );

    // Refusals, as JOC words them.
    let (code, body) = s0.switch_member("{}").await?;
    assert_eq!(code, 420, "missing id: {body}");
    assert_eq!(
        body["error"]["message"],
        "JocServiceException: missing newMemberId"
    );
    let (code, body) = s0
        .switch_member(&format!(r#"{{"memberId":"{}"}}"#, api.member_id))
        .await?;
    assert_eq!(code, 420, "API-server target: {body}");
    assert_eq!(
        body["error"]["message"],
        "JocServiceException: [manual_switchover][api-0]The action to switch to an API server is not permitted"
    );
    // Unknown target: JOC only logs it; SWITCH_MEMBER and nothing written.
    let (code, body) = s0.switch_member(r#"{"memberId":"nobody:00"}"#).await?;
    assert_eq!(
        (code, body["state"].as_str()),
        (200, Some("SWITCH_MEMBER")),
        "{body}"
    );
    let after = joc::cluster_row(url).await?.context("row")?;
    assert_eq!(
        after.switch_member_id, None,
        "nothing written for an unknown target"
    );

    // docs/joc-facts.md fact 17: switch requested at a standby, to itself: the standby
    // rewrites the row (HEART_BEAT = now too); the active hands over at its
    // next poll, the target clears the switch fields at its own.
    let target = members
        .iter()
        .find(|m| m.member_id != first)
        .context("a standby")?;
    let request = format!(r#"{{"memberId":"{}"}}"#, target.member_id);
    let asked = Instant::now();
    let (code, body) = target.switch_member(&request).await?;
    assert_eq!(
        (code, body["state"].as_str()),
        (200, Some("SWITCH_MEMBER")),
        "{body}"
    );
    let mut asked_again = false;
    wait_for_ok(
        "switch to the standby completed",
        Duration::from_secs(4 * POLL_S + 6),
        CHECK,
        || {
            let request = request.clone();
            let first = &first;
            let again = !asked_again && asked.elapsed() > Duration::from_millis(2500 * POLL_S);
            asked_again |= again;
            async move {
                let row = joc::cluster_row(url).await?.context("no row")?;
                if again && row.member_id == *first && row.switch_member_id.is_none() {
                    // docs/joc-facts.md fact 15: the active's full-row rewrite (read before
                    // our write) can lose the request. Ask again.
                    eprintln!("switch request lost in the active's rewrite; asking again");
                    target.switch_member(&request).await?;
                }
                ensure!(
                    row.member_id == target.member_id
                        && row.switch_member_id.is_none()
                        && row.switch_heart_beat.is_none(),
                    "row {row:?}"
                );
                one_consistent_active(url, &members).await
            }
        },
    )
    .await?;
    eprintln!("switch via a standby took {:.1?}", asked.elapsed());

    // Switch requested at the active: it stops and hands over at once; the
    // target starts its services no sooner than 1 s later (docs/joc-facts.md fact 11: the
    // license re-read sleeps 1 s before a switch-over's start).
    let old = target;
    let next = members
        .iter()
        .find(|m| m.member_id != old.member_id)
        .context("another member")?;
    let starts_before = next.events("start").len();
    let (code, body) = old
        .switch_member(&format!(r#"{{"memberId":"{}"}}"#, next.member_id))
        .await?;
    let answered = now_ns();
    assert_eq!(
        (code, body["state"].as_str()),
        (200, Some("SWITCH_MEMBER")),
        "{body}"
    );
    let row = joc::cluster_row(url).await?.context("row")?;
    assert_eq!(
        row.member_id, next.member_id,
        "the active wrote MEMBER_ID = target at once"
    );
    assert!(
        !old.active().await?,
        "the active stopped its services before handing over"
    );
    wait_for_ok(
        "switch from the active completed",
        Duration::from_secs(2 * POLL_S + 5),
        CHECK,
        || async {
            let row = joc::cluster_row(url).await?.context("no row")?;
            ensure!(
                row.member_id == next.member_id && row.switch_member_id.is_none(),
                "row {row:?}"
            );
            one_consistent_active(url, &members).await
        },
    )
    .await?;
    assert!(
        joc::cluster_heart_beat_of(url, "witness").await? > Some(946_684_800),
        "docs/joc-facts.md fact 16: the switch-over's stop and start updated the witness row too"
    );
    let started = *next
        .events("start")
        .get(starts_before)
        .context("the target's start")?;
    assert!(
        started - answered >= 1_000_000_000,
        "services started {} ms after MEMBER_ID changed (must be ≥ 1 s)",
        (started - answered) / 1_000_000
    );
    let (code, body) = s0
        .switch_member(&format!(r#"{{"memberId":"{}"}}"#, next.member_id))
        .await?;
    assert_eq!(
        (code, body["state"].as_str()),
        (200, Some("ALREADY_STARTED")),
        "{body}"
    );

    // The active freezes: a standby takes over once the heartbeat is
    // exceeded by database time, not before.
    let frozen = by_id(&members, &next.member_id)?;
    let frozen_from = now_ns();
    frozen.process.freeze()?;
    let frozen_at = joc::db_now(url).await?;
    wait_for_ok(
        "database clock past the freeze",
        Duration::from_secs(3),
        CHECK,
        || async {
            let now = joc::db_now(url).await?;
            ensure!(now > frozen_at, "db now {now}");
            anyhow::Ok(())
        },
    )
    .await?;
    let last = joc::cluster_row(url).await?.context("row")?;
    ensure!(
        last.member_id == frozen.member_id,
        "row moved before the freeze took effect: {last:?}"
    );
    let taken = wait_for_ok(
        "a standby takes over from the frozen active",
        Duration::from_secs(EXCEEDED_S + 3 * POLL_S + 5),
        CHECK,
        || async {
            let row = joc::cluster_row(url).await?.context("no row")?;
            ensure!(row.member_id != frozen.member_id, "still {}", row.member_id);
            anyhow::Ok(row)
        },
    )
    .await?;
    assert!(
        taken.heart_beat - last.heart_beat > EXCEEDED_S as i64,
        "takeover only {} s after the last heartbeat (must be > {EXCEEDED_S})",
        taken.heart_beat - last.heart_beat
    );
    // Both run services by their flags now; the frozen one's do not run.
    frozen.process.thaw()?;
    let frozen_times = [Frozen {
        member: frozen.host.clone(),
        from_ns: frozen_from,
        to_ns: now_ns(),
    }];
    wait_for_ok(
        "one active after the thaw",
        Duration::from_secs(2 * POLL_S + 5),
        CHECK,
        || async {
            let active = one_consistent_active(url, &members).await?;
            ensure!(
                active == frozen.member_id || !frozen.active().await?,
                "thawed member still runs its services"
            );
            anyhow::Ok(active)
        },
    )
    .await?;

    // docs/joc-facts.md fact 12: clean shutdown of the active deletes its row and resets
    // its instance heartbeat to 1970-01-01; a standby takes over at its next poll.
    let active_id = one_consistent_active(url, &members).await?;
    let leaving = by_id(&members, &active_id)?;
    let stopped = leaving.process.terminate(Duration::from_secs(15)).await?;
    ensure!(
        !stopped.forced && stopped.status.success(),
        "SIGTERM: {stopped:?}"
    );
    let gone_at = Instant::now();
    let row = joc::cluster_row(url).await?;
    ensure!(
        row.as_ref()
            .is_none_or(|r| r.member_id != leaving.member_id),
        "the leaving member's row is still there: {row:?}"
    );
    let reset = joc::instances(url)
        .await?
        .into_iter()
        .find(|i| i.member_id == leaving.member_id)
        .context("the leaving member's instance row")?;
    assert_eq!(reset.heart_beat, 0, "HEART_BEAT reset to 1970-01-01");
    let remaining: Vec<&Standin> = members
        .iter()
        .copied()
        .filter(|m| m.member_id != leaving.member_id)
        .collect();
    wait_for_ok(
        "a standby takes over after the clean shutdown",
        Duration::from_secs(EXCEEDED_S),
        CHECK,
        || one_consistent_active(url, &remaining),
    )
    .await?;
    let took = gone_at.elapsed();
    ensure!(
        took < Duration::from_secs(EXCEEDED_S),
        "takeover after clean shutdown took {took:?}"
    );
    assert!(
        leaving.events("stop").len() == leaving.events("start").len(),
        "services stopped on shutdown"
    );
    assert!(!api.active().await?);
    assert!(
        api.events("start").is_empty(),
        "the API server never ran services"
    );
    // From the freeze to a while after the thaw JOC itself may let two
    // members run services (a double take-over, the thawed member until its
    // next poll: docs/joc-facts.md fact 20); nowhere else.
    let report = services_report(dir, &frozen_times, now_ns())?;
    eprintln!("services: {}", report.summary());
    let window = [FaultWindow {
        from_ns: frozen_times[0].from_ns,
        to_ns: frozen_times[0].to_ns + (2 * POLL_S as i64 + 2) * 1_000_000_000,
    }];
    let unexplained = report.overlaps_outside(&window);
    ensure!(
        unexplained.is_empty(),
        "overlaps outside the freeze's window: {unexplained:?}"
    );
    Ok(())
}

#[tokio::test]
async fn postgres_stand_in_cluster_behaves_like_joc() -> Result<()> {
    cluster_behaves_like_joc(Backend::Postgres).await
}

#[tokio::test]
async fn mariadb_stand_in_cluster_behaves_like_joc() -> Result<()> {
    cluster_behaves_like_joc(Backend::MariaDb).await
}

// ---------------------------------------------------------------------------
// Start-up: entrypoint, servlet init, start-up delay (docs/joc-facts.md fact 2, 3, 5, 8, 22)
// ---------------------------------------------------------------------------

async fn start_up_rules(backend: Backend) -> Result<()> {
    let db = TestDb::start(backend).await?;
    let url = db.url();
    let dir = tempfile::Builder::new().prefix("joc-standin-").tempdir()?;
    let path = dir.path().to_owned();
    with_logs(backend, dir, async move {
        // Tables only with create_db_tables = true or etc/createTables (docs/joc-facts.md fact 5):
        // without, the servlet's CheckInstance finds no JOC_INSTANCES and JOC stops.
        let no_tables = write_base(
            &path,
            "joc-9",
            &url,
            &BaseOpts {
                ordering: Some("9"),
                create_db_tables: false,
                ..BaseOpts::default()
            },
        )?;
        let s = Standin::start(&path, "joc-9", &no_tables, &["--exit-with-jvm"])?;
        let status = s.wait_exit(Duration::from_secs(20)).await?;
        assert!(!status.success(), "no tables: JOC stopped, {status:?}");
        assert!(s.log().contains("CheckInstance"), "{}", s.log());
        assert!(joc::instances(&url).await.is_err(), "no table was created");
        // The signal file <user.dir>/etc/createTables creates them, and is deleted.
        std::fs::create_dir_all(no_tables.join("etc"))?;
        std::fs::write(no_tables.join("etc/createTables"), "")?;
        let s = Standin::start(&path, "joc-9", &no_tables, &[])?;
        s.wait_up().await?;
        assert!(
            !no_tables.join("etc/createTables").exists(),
            "signal file deleted"
        );
        wait_for_ok(
            "the instance row",
            Duration::from_secs(10),
            CHECK,
            || async {
                joc::instances(&url)
                    .await?
                    .into_iter()
                    .next()
                    .context("no row")
            },
        )
        .await?;

        // docs/joc-facts.md fact 3: the entrypoint appends cluster_id and an ordering only when missing.
        let appended = write_base(&path, "joc-1", &url, &BaseOpts::default())?;
        let s1 = Standin::start(&path, "joc-1", &appended, &[])?;
        s1.wait_up().await?;
        let text = std::fs::read_to_string(appended.join("resources/joc/joc.properties"))?;
        let props = JocProperties::parse(&text)?;
        assert!(
            props.checked_ordering().is_ok(),
            "ordering appended: {text}"
        );
        assert_eq!(
            text.matches("cluster_id").count(),
            1,
            "cluster_id kept once: {text}"
        );
        // A read-only joc.properties without ordering: the entrypoint fails.
        let read_only = write_base(&path, "joc-2", &url, &BaseOpts::default())?;
        let file = read_only.join("resources/joc/joc.properties");
        if nix::unistd::geteuid().is_root() {
            // Root writes a 0444 file anyway: a file on a read-only file
            // system (as a configMap mount is) instead.
            std::fs::remove_file(&file)?;
            std::os::unix::fs::symlink("/proc/version", &file)?;
        } else {
            let mut perms = std::fs::metadata(&file)?.permissions();
            perms.set_readonly(true);
            std::fs::set_permissions(&file, perms)?;
        }
        let s2 = Standin::start(&path, "joc-2", &read_only, &[])?;
        let status = s2.wait_exit(Duration::from_secs(10)).await?;
        assert!(!status.success(), "read-only joc.properties: {status:?}");
        assert!(
            s2.log().contains("needs a writable joc.properties"),
            "{}",
            s2.log()
        );

        // docs/joc-facts.md fact 2: ordering outside 0–99 → JOC refuses to start.
        let bad = write_base(
            &path,
            "joc-3",
            &url,
            &BaseOpts {
                ordering: Some("100"),
                ..BaseOpts::default()
            },
        )?;
        let s3 = Standin::start(&path, "joc-3", &bad, &["--exit-with-jvm"])?;
        let status = s3.wait_exit(Duration::from_secs(10)).await?;
        assert!(!status.success(), "ordering 100: {status:?}");
        assert!(s3.log().contains(joc::MSG_ORDERING), "{}", s3.log());
        // ... and the container outlives the dead JVM (docs/joc-facts.md fact 3): without
        // --exit-with-jvm the process stays, answering nothing.
        let s3 = Standin::start(&path, "joc-3", &bad, &[])?;
        wait_for_ok(
            "the JVM's refusal",
            Duration::from_secs(10),
            CHECK,
            || async {
                ensure!(s3.log().contains("lives on without its JVM"), "not yet");
                anyhow::Ok(())
            },
        )
        .await?;
        assert!(s3.process.is_running(), "the container lives on");
        assert!(
            s3.version().await.is_err(),
            "nothing answers on the JOC port"
        );

        // A second live instance with the same ordering is refused (docs/joc-facts.md fact 2).
        let dup = write_base(
            &path,
            "joc-4",
            &url,
            &BaseOpts {
                ordering: Some("9"),
                ..BaseOpts::default()
            },
        )?;
        let s4 = Standin::start(&path, "joc-4", &dup, &["--exit-with-jvm"])?;
        let status = s4.wait_exit(Duration::from_secs(15)).await?;
        assert!(!status.success(), "duplicate ordering: {status:?}");
        assert!(
            s4.log()
                .contains("There is already a running JOC instance with ID 'joc#9'"),
            "{}",
            s4.log()
        );
        // After joc-9's clean shutdown (heartbeat 1970) its ordering is free and
        // joc-4 takes over its row.
        let stopped = s.process.terminate(Duration::from_secs(15)).await?;
        ensure!(stopped.status.success(), "{stopped:?}");
        let s4 = Standin::start(&path, "joc-4", &dup, &[])?;
        s4.wait_up().await?;
        wait_for_ok(
            "joc-4 took over ordering 9",
            Duration::from_secs(10),
            CHECK,
            || async {
                let rows = joc::instances(&url).await?;
                let nine: Vec<_> = rows.iter().filter(|i| i.ordering == 9).collect();
                ensure!(
                    nine.len() == 1 && nine[0].member_id == s4.member_id,
                    "{nine:?}"
                );
                anyhow::Ok(())
            },
        )
        .await?;

        // docs/joc-facts.md fact 22, 8: after a restart the web application answers at
        // once, the cluster service heartbeats only after the start-up delay.
        let before = joc::instances(&url)
            .await?
            .into_iter()
            .find(|i| i.member_id == s1.member_id)
            .context("joc-1's row")?;
        let stopped = s1.process.kill().await?;
        ensure!(!stopped.success());
        let s1 = Standin::start(&path, "joc-1", &appended, &["--startup-delay", "3s"])?;
        s1.wait_up().await?;
        let up_at = Instant::now();
        let row = joc::instances(&url)
            .await?
            .into_iter()
            .find(|i| i.member_id == s1.member_id)
            .context("row")?;
        assert_eq!(
            row.started_at, before.started_at,
            "version answers before the new process wrote its row"
        );
        wait_for_ok(
            "the new process's first write",
            Duration::from_secs(10),
            CHECK,
            || async {
                let row = joc::instances(&url)
                    .await?
                    .into_iter()
                    .find(|i| i.member_id == s1.member_id)
                    .context("row")?;
                ensure!(
                    row.started_at > before.started_at || row.heart_beat > before.heart_beat + 3,
                    "not yet"
                );
                anyhow::Ok(())
            },
        )
        .await?;
        assert!(
            up_at.elapsed() >= Duration::from_secs(1),
            "the first write came {:?} after the web app answered",
            up_at.elapsed()
        );

        // The JVM is its own process in the container's process group, its
        // command line marked with -Djetty.base=<JETTY_BASE> (README "Fencing").
        let base = s1.base.to_str().context("utf-8 base")?;
        let jvms = joc_ha_sidecar::js7::fence::find_jvms(Path::new("/proc"), base)?;
        ensure!(jvms.len() == 1, "one JVM of {base}: {jvms:?}");
        let jvm = jvms[0];
        ensure!(
            jvm != s1.process.pid().as_raw(),
            "the JVM is not the container process"
        );
        let jvm_pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(jvm)))?;
        assert_eq!(
            jvm_pgid,
            s1.process.pid(),
            "the JVM is in the container's process group"
        );
        // docs/joc-facts.md fact 3: SIGKILL of the JVM alone (a fence) ends JOC
        // at once; the container lives on.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(jvm),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        wait_for_ok(
            "the JOC port goes dead",
            Duration::from_secs(10),
            CHECK,
            || async {
                ensure!(s1.version().await.is_err(), "still answers");
                anyhow::Ok(())
            },
        )
        .await?;
        assert!(s1.process.is_running(), "the container outlives its JVM");
        assert!(
            joc_ha_sidecar::js7::fence::find_jvms(Path::new("/proc"), base)?.is_empty(),
            "no JVM left"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn postgres_start_up_follows_the_image_and_the_servlet() -> Result<()> {
    start_up_rules(Backend::Postgres).await
}

#[tokio::test]
async fn mariadb_start_up_follows_the_image_and_the_servlet() -> Result<()> {
    start_up_rules(Backend::MariaDb).await
}

// ---------------------------------------------------------------------------
// Fresh install (docs/joc-facts.md fact 9)
// ---------------------------------------------------------------------------

async fn fresh_install_blocks(backend: Backend) -> Result<()> {
    let db = TestDb::start(backend).await?;
    let url = db.url();
    let dir = tempfile::Builder::new().prefix("joc-standin-").tempdir()?;
    let path = dir.path().to_owned();
    with_logs(backend, dir, async move {
        let b0 = write_base(
            &path,
            "joc-0",
            &url,
            &BaseOpts {
                ordering: Some("0"),
                ..BaseOpts::default()
            },
        )?;
        let b1 = write_base(
            &path,
            "joc-1",
            &url,
            &BaseOpts {
                ordering: Some("1"),
                ..BaseOpts::default()
            },
        )?;
        let s0 = Standin::start(&path, "joc-0", &b0, &[])?;
        s0.wait_up().await?;
        let first = wait_for_ok(
            "joc-0 takes MEMBER_ID",
            Duration::from_secs(15),
            CHECK,
            || async { joc::joc_active_member(&url).await?.context("no row") },
        )
        .await?;
        ensure!(first == s0.member_id, "MEMBER_ID {first}");
        let s1 = Standin::start(&path, "joc-1", &b1, &[])?;
        s1.wait_up().await?;
        // joc-0 blocks in its services' start: no heartbeats at all, neither
        // JOC_CLUSTER nor JOC_INSTANCES; the web app still answers.
        let row = joc::cluster_row(&url).await?.context("row")?;
        let inst0 =
            |rows: Vec<joc::Instance>| rows.into_iter().find(|i| i.member_id == s0.member_id);
        let hb0 = inst0(joc::instances(&url).await?)
            .context("joc-0's row")?
            .heart_beat;
        // joc-1 takes over after the timeout and blocks the same way.
        let taken = wait_for_ok(
            "joc-1 takes over from the blocked joc-0",
            Duration::from_secs(EXCEEDED_S + 4 * POLL_S + 5),
            CHECK,
            || async {
                let r = joc::cluster_row(&url).await?.context("no row")?;
                ensure!(r.member_id == s1.member_id, "MEMBER_ID {}", r.member_id);
                anyhow::Ok(r)
            },
        )
        .await?;
        assert!(
            taken.heart_beat - row.heart_beat > EXCEEDED_S as i64,
            "JOC_CLUSTER heartbeat stood still"
        );
        assert_eq!(
            inst0(joc::instances(&url).await?)
                .context("row")?
                .heart_beat,
            hb0,
            "no instance heartbeat from joc-0"
        );
        assert_eq!(
            s0.version().await?,
            200,
            "the blocked JOC's web app answers"
        );
        assert!(s0.log().contains("no controllers found"), "{}", s0.log());
        // joc-1 blocks too: its instance heartbeat stops.
        let hb1 = wait_for_ok("joc-1 blocked", Duration::from_secs(10), CHECK, || async {
            let rows = joc::instances(&url).await?;
            let i = rows
                .iter()
                .find(|i| i.member_id == s1.member_id)
                .context("row")?;
            ensure!(
                s1.log().matches("no controllers found").count() >= 1,
                "not yet"
            );
            anyhow::Ok(i.heart_beat)
        })
        .await?;
        let db_then = joc::db_now(&url).await?;
        wait_for_ok(
            "two more seconds of database time",
            Duration::from_secs(5),
            CHECK,
            || async {
                ensure!(joc::db_now(&url).await? >= db_then + 2, "not yet");
                anyhow::Ok(())
            },
        )
        .await?;
        let rows = joc::instances(&url).await?;
        let i = rows
            .iter()
            .find(|i| i.member_id == s1.member_id)
            .context("row")?;
        assert!(
            i.heart_beat <= hb1 + 1,
            "joc-1 heartbeats while blocked: {} then {}",
            hb1,
            i.heart_beat
        );
        assert!(
            s0.events("start").is_empty() && s1.events("start").is_empty(),
            "nobody runs services"
        );

        // A Controller appears: the blocked members wake up; in the end one
        // is MEMBER_ID and runs services.
        register(&url).await?;
        wait_for_ok(
            "one active after the Controller",
            Duration::from_secs(30),
            CHECK,
            || async { one_consistent_active(&url, &[&s0, &s1]).await },
        )
        .await?;
        let report = services_report(&path, &[], now_ns())?;
        eprintln!("after the wake-up: {}", report.summary());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn postgres_fresh_install_blocks_until_a_controller_is_registered() -> Result<()> {
    fresh_install_blocks(Backend::Postgres).await
}

#[tokio::test]
async fn mariadb_fresh_install_blocks_until_a_controller_is_registered() -> Result<()> {
    fresh_install_blocks(Backend::MariaDb).await
}

// ---------------------------------------------------------------------------
// No license (docs/joc-facts.md fact 10)
// ---------------------------------------------------------------------------

async fn no_license(backend: Backend) -> Result<()> {
    let db = TestDb::start(backend).await?;
    let url = db.url();
    let dir = tempfile::Builder::new().prefix("joc-standin-").tempdir()?;
    let path = dir.path().to_owned();
    with_logs(backend, dir, async move {
        register(&url).await?;
        let opts = |o| BaseOpts {
            ordering: Some(o),
            licensed: false,
            ..BaseOpts::default()
        };
        let b0 = write_base(&path, "joc-0", &url, &opts("0"))?;
        let b1 = write_base(&path, "joc-1", &url, &opts("1"))?;
        let s0 = Standin::start(&path, "joc-0", &b0, &[])?;
        s0.wait_up().await?;
        // The first JOC starts its services (automatic start needs no license).
        wait_for_ok("joc-0 active", Duration::from_secs(15), CHECK, || async {
            one_consistent_active(&url, &[&s0]).await
        })
        .await?;
        let s1 = Standin::start(&path, "joc-1", &b1, &[])?;
        s1.wait_up().await?;
        wait_for_ok(
            "joc-1's instance heartbeat",
            Duration::from_secs(15),
            CHECK,
            || async {
                let rows = joc::instances(&url).await?;
                ensure!(
                    rows.iter()
                        .any(|i| i.member_id == s1.member_id && i.is_fresh(EXCEEDED_S)),
                    "not yet"
                );
                anyhow::Ok(())
            },
        )
        .await?;
        // REST switch: refused for want of a license.
        let (code, body) = s0
            .switch_member(&format!(r#"{{"memberId":"{}"}}"#, s1.member_id))
            .await?;
        assert_eq!(code, 420, "{body}");
        assert_eq!(
            body["error"]["message"],
            "JocServiceException: MISSING_LICENSE"
        );
        // A request written as the sidecar does: the active executes it, the
        // target refuses to start services; nobody runs services and the
        // row's heartbeat freezes; the standby never fails over.
        joc::write_switch_request(&url, &s1.member_id, 0).await?;
        let moved = wait_for_ok(
            "MEMBER_ID moves to joc-1",
            Duration::from_secs(4 * POLL_S + 3),
            CHECK,
            || async {
                let r = joc::cluster_row(&url).await?.context("row")?;
                ensure!(r.member_id == s1.member_id, "MEMBER_ID {}", r.member_id);
                anyhow::Ok(r)
            },
        )
        .await?;
        wait_for_ok(
            "joc-1 refuses to start (MISSING_LICENSE)",
            Duration::from_secs(10),
            CHECK,
            || async {
                ensure!(s1.log().contains("MISSING_LICENSE"), "not yet");
                anyhow::Ok(())
            },
        )
        .await?;
        let until = moved.db_now + EXCEEDED_S as i64 + 3 * POLL_S as i64;
        wait_for_ok(
            "past the timeout by database time",
            Duration::from_secs(EXCEEDED_S + 3 * POLL_S + 5),
            CHECK,
            || async {
                ensure!(joc::db_now(&url).await? > until, "not yet");
                anyhow::Ok(())
            },
        )
        .await?;
        let row = joc::cluster_row(&url).await?.context("row")?;
        assert_eq!(row.member_id, s1.member_id, "no fail-over without license");
        assert!(
            row.db_now - row.heart_beat > EXCEEDED_S as i64,
            "the row's heartbeat froze: {row:?}"
        );
        assert!(
            !s0.active().await? && !s1.active().await?,
            "no member runs services"
        );
        assert!(s1.events("start").is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn postgres_without_license_a_switch_leaves_no_services() -> Result<()> {
    no_license(Backend::Postgres).await
}

#[tokio::test]
async fn mariadb_without_license_a_switch_leaves_no_services() -> Result<()> {
    no_license(Backend::MariaDb).await
}

// ---------------------------------------------------------------------------
// Switch requests as the sidecar writes them (docs/joc-facts.md fact 13, 14, 15)
// ---------------------------------------------------------------------------

async fn switch_requests(backend: Backend) -> Result<()> {
    let db = TestDb::start(backend).await?;
    let url = db.url();
    let dir = tempfile::Builder::new().prefix("joc-standin-").tempdir()?;
    let path = dir.path().to_owned();
    with_logs(backend, dir, async move {
        register(&url).await?;
        let opts = |o| BaseOpts {
            ordering: Some(o),
            ..BaseOpts::default()
        };
        let b0 = write_base(&path, "joc-0", &url, &opts("0"))?;
        let b1 = write_base(&path, "joc-1", &url, &opts("1"))?;
        let ba = write_base(
            &path,
            "api-0",
            &url,
            &BaseOpts {
                ordering: Some("50"),
                api_server: true,
                ..BaseOpts::default()
            },
        )?;
        let s0 = Standin::start(&path, "joc-0", &b0, &[])?;
        s0.wait_up().await?;
        wait_for_ok("joc-0 active", Duration::from_secs(15), CHECK, || async {
            one_consistent_active(&url, &[&s0]).await
        })
        .await?;
        let s1 = Standin::start(&path, "joc-1", &b1, &[])?;
        let api = Standin::start(&path, "api-0", &ba, &[])?;
        for s in [&s1, &api] {
            s.wait_up().await?;
        }
        wait_for_ok(
            "both instances heartbeat",
            Duration::from_secs(15),
            CHECK,
            || async {
                let rows = joc::instances(&url).await?;
                ensure!(
                    rows.iter().filter(|i| i.is_fresh(EXCEEDED_S)).count() == 3,
                    "not yet"
                );
                anyhow::Ok(())
            },
        )
        .await?;
        let members = [&s0, &s1];

        // docs/joc-facts.md fact 15: the active rewrites the whole row from what it read;
        // a request written between its read and its write is lost although
        // the writer's UPDATE succeeded.
        let lock = joc::ClusterRowLock::take(&url).await?;
        let reads = s0.log().matches("[poll][read JOC_CLUSTER]").count();
        wait_for_ok(
            "joc-0 read the row and waits on its UPDATE",
            Duration::from_secs(5),
            CHECK,
            || async {
                ensure!(
                    s0.log().matches("[poll][read JOC_CLUSTER]").count() > reads,
                    "no read yet"
                );
                anyhow::Ok(())
            },
        )
        .await?;
        let changed = lock.write_request_and_commit(&s1.member_id).await?;
        assert_eq!(changed, 1, "the request's UPDATE succeeded");
        wait_for_ok(
            "the request is gone, MEMBER_ID unchanged",
            Duration::from_secs(5),
            CHECK,
            || async {
                let r = joc::cluster_row(&url).await?.context("row")?;
                ensure!(
                    r.switch_member_id.is_none() && r.member_id == s0.member_id,
                    "{r:?}"
                );
                anyhow::Ok(())
            },
        )
        .await?;
        let r = joc::cluster_row(&url).await?.context("row")?;
        wait_for_ok(
            "two more polls of database time",
            Duration::from_secs(6),
            CHECK,
            || async {
                ensure!(
                    joc::db_now(&url).await? > r.db_now + 2 * POLL_S as i64,
                    "not yet"
                );
                anyhow::Ok(())
            },
        )
        .await?;
        assert_eq!(
            joc::joc_active_member(&url).await?,
            Some(s0.member_id.clone()),
            "the lost request was never executed"
        );

        // docs/joc-facts.md fact 13: a request older than the timeout is skipped at every
        // poll and never cleared.
        joc::write_switch_request(&url, &s1.member_id, EXCEEDED_S as i64 + 5).await?;
        let written = joc::cluster_row(&url).await?.context("row")?;
        wait_for_ok(
            "three polls of database time",
            Duration::from_secs(3 * POLL_S + 5),
            CHECK,
            || async {
                ensure!(
                    joc::db_now(&url).await? > written.db_now + 3 * POLL_S as i64,
                    "not yet"
                );
                anyhow::Ok(())
            },
        )
        .await?;
        let r = joc::cluster_row(&url).await?.context("row")?;
        assert_eq!(
            r.member_id, s0.member_id,
            "stale request not executed: {r:?}"
        );
        assert_eq!(
            r.switch_member_id.as_deref(),
            Some(s1.member_id.as_str()),
            "stale request left in place: {r:?}"
        );
        assert_eq!(r.switch_heart_beat, written.switch_heart_beat);
        assert!(
            r.heart_beat > written.heart_beat,
            "the active kept heartbeating"
        );
        assert!(s0.log().contains("switchHeartBeat"), "{}", s0.log());

        // docs/joc-facts.md fact 14: a fresh request naming the API server is executed
        // without any check; nobody runs services and the members wait for it
        // as long as its instance heartbeats.
        joc::write_switch_request(&url, &api.member_id, 0).await?;
        let moved = wait_for_ok(
            "MEMBER_ID becomes the API server",
            Duration::from_secs(4 * POLL_S + 3),
            CHECK,
            || async {
                let r = joc::cluster_row(&url).await?.context("row")?;
                ensure!(r.member_id == api.member_id, "MEMBER_ID {}", r.member_id);
                anyhow::Ok(r)
            },
        )
        .await?;
        let until = moved.db_now + EXCEEDED_S as i64 + 3 * POLL_S as i64;
        wait_for_ok(
            "past the timeout by database time",
            Duration::from_secs(EXCEEDED_S + 3 * POLL_S + 5),
            CHECK,
            || async {
                ensure!(joc::db_now(&url).await? > until, "not yet");
                anyhow::Ok(())
            },
        )
        .await?;
        let r = joc::cluster_row(&url).await?.context("row")?;
        assert_eq!(
            r.member_id, api.member_id,
            "the members wait for the API server: {r:?}"
        );
        for m in members {
            assert!(!m.active().await?, "{} runs services", m.host);
        }
        assert!(s1.log().contains("wait for switchMember"), "{}", s1.log());
        assert_no_overlap(&path, &[])?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn postgres_switch_requests_stale_lost_and_to_an_api_server() -> Result<()> {
    switch_requests(Backend::Postgres).await
}

#[tokio::test]
async fn mariadb_switch_requests_stale_lost_and_to_an_api_server() -> Result<()> {
    switch_requests(Backend::MariaDb).await
}

// ---------------------------------------------------------------------------
// A freeze in the middle of a start (docs/joc-facts.md fact 20)
// ---------------------------------------------------------------------------

async fn freeze_mid_start(backend: Backend) -> Result<()> {
    let db = TestDb::start(backend).await?;
    let url = db.url();
    let dir = tempfile::Builder::new().prefix("joc-standin-").tempdir()?;
    let path = dir.path().to_owned();
    with_logs(backend, dir, async move {
        register(&url).await?;
        let opts = |o| BaseOpts {
            ordering: Some(o),
            ..BaseOpts::default()
        };
        let b0 = write_base(&path, "joc-0", &url, &opts("0"))?;
        let b1 = write_base(&path, "joc-1", &url, &opts("1"))?;
        let s0 = Standin::start(&path, "joc-0", &b0, &[])?;
        s0.wait_up().await?;
        wait_for_ok("joc-0 active", Duration::from_secs(15), CHECK, || async {
            one_consistent_active(&url, &[&s0]).await
        })
        .await?;
        let s1 = Standin::start(&path, "joc-1", &b1, &[])?;
        s1.wait_up().await?;
        wait_for_ok(
            "joc-1's instance heartbeat",
            Duration::from_secs(15),
            CHECK,
            || async {
                let rows = joc::instances(&url).await?;
                ensure!(
                    rows.iter()
                        .any(|i| i.member_id == s1.member_id && i.is_fresh(EXCEEDED_S)),
                    "not yet"
                );
                anyhow::Ok(())
            },
        )
        .await?;
        // Switch to joc-1 at the active: MEMBER_ID = joc-1 at once; joc-1's
        // next poll begins its start, which first sleeps 1 s.
        let (code, body) = s0
            .switch_member(&format!(r#"{{"memberId":"{}"}}"#, s1.member_id))
            .await?;
        assert_eq!(
            (code, body["state"].as_str()),
            (200, Some("SWITCH_MEMBER")),
            "{body}"
        );
        wait_for_ok(
            "joc-1 begins its start",
            Duration::from_secs(5),
            Duration::from_millis(10),
            || async {
                ensure!(
                    s1.log()
                        .contains("[manual_switchover][perform][active=false]START"),
                    "not yet"
                );
                anyhow::Ok(())
            },
        )
        .await?;
        let frozen_from = now_ns();
        s1.process.freeze()?;
        ensure!(
            s1.events("start").is_empty(),
            "joc-1 finished its start before the freeze"
        );
        // joc-0 takes over from the frozen joc-1 and starts its services.
        wait_for_ok(
            "joc-0 takes over and runs services",
            Duration::from_secs(EXCEEDED_S + 4 * POLL_S + 5),
            CHECK,
            || async {
                let r = joc::cluster_row(&url).await?.context("row")?;
                ensure!(r.member_id == s0.member_id && s0.active().await?, "{r:?}");
                anyhow::Ok(())
            },
        )
        .await?;
        s1.process.thaw()?;
        let thawed = now_ns();
        // joc-1 finishes its start although it is no longer MEMBER_ID, then
        // stops at its next poll.
        let started = wait_for_ok(
            "joc-1 resumes its start",
            Duration::from_secs(5),
            CHECK,
            || async { s1.events("start").first().copied().context("no start") },
        )
        .await?;
        assert!(started >= thawed, "started after the thaw");
        assert_eq!(
            joc::joc_active_member(&url).await?,
            Some(s0.member_id.clone()),
            "joc-1 is not MEMBER_ID"
        );
        let stopped = wait_for_ok(
            "joc-1 stops at its next poll",
            Duration::from_secs(2 * POLL_S + 3),
            CHECK,
            || async { s1.events("stop").first().copied().context("no stop") },
        )
        .await?;
        let frozen = [Frozen {
            member: "joc-1".into(),
            from_ns: frozen_from,
            to_ns: thawed,
        }];
        let report = services_report(&path, &frozen, now_ns())?;
        eprintln!(
            "services: {}; joc-1 ran {} ms after the thaw",
            report.summary(),
            (stopped - started) / 1_000_000
        );
        ensure!(
            report.overlaps.iter().any(|o| o.start_ns >= thawed),
            "two JOCs ran services at once after the thaw: {:?}",
            report.overlaps
        );
        wait_for_ok(
            "one active in the end",
            Duration::from_secs(3 * POLL_S + 5),
            CHECK,
            || async { one_consistent_active(&url, &[&s0, &s1]).await },
        )
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn postgres_a_freeze_mid_start_resumes_the_start() -> Result<()> {
    freeze_mid_start(Backend::Postgres).await
}

#[tokio::test]
async fn mariadb_a_freeze_mid_start_resumes_the_start() -> Result<()> {
    freeze_mid_start(Backend::MariaDb).await
}

// ---------------------------------------------------------------------------
// LEGACY layout (--resources-dir): the old operator's files, lenient
// ---------------------------------------------------------------------------

/// Resources folder of the old layout: joc.properties without ordering and a
/// hibernate.cfg.xml whose password is JOC's `${JS7_DBMS_PASSWORD}`.
fn write_legacy_resources(dir: &Path, url: &str, cluster_id: &str) -> Result<PathBuf> {
    let resources = dir.join(format!("resources-{cluster_id}"));
    std::fs::create_dir_all(&resources)?;
    std::fs::write(
        resources.join("joc.properties"),
        joc::render_joc_properties(POLL_S, EXCEEDED_S, cluster_id),
    )?;
    let (jdbc, user, _password) = joc::sqlx_to_jdbc(url)?;
    std::fs::write(
        resources.join("hibernate.cfg.xml"),
        joc::render_hibernate_cfg(&jdbc, user.as_deref(), Some("${JS7_DBMS_PASSWORD}")),
    )?;
    Ok(resources)
}

/// SQLite (the demo's single-host database), legacy layout: an API server
/// alone never creates JOC_CLUSTER, so a switch request finds "db cluster not found".
#[tokio::test]
async fn sqlite_legacy_api_server_alone_leaves_no_cluster_row() -> Result<()> {
    let db = TestDb::start(Backend::Sqlite).await?;
    let url = db.url();
    let dir = tempfile::Builder::new().prefix("joc-standin-").tempdir()?;
    let resources = write_legacy_resources(dir.path(), &url, "api")?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut command = Command::new(workspace_binary("joc-standin")?);
    command
        .current_dir(dir.path())
        .arg("--resources-dir")
        .arg(&resources)
        .args([
            "--http-addr",
            &addr,
            "--hostname",
            "api-0",
            "--startup-delay",
            "0s",
        ])
        .env("JS7_DBMS_PASSWORD", joc_ha_tests::db::TEST_PASSWORD);
    let process = ManagedProcess::spawn(command, dir.path().join("api-0.log"))?;
    let first = wait_for_ok(
        "the API server's instance row",
        Duration::from_secs(15),
        CHECK,
        || async {
            let rows = joc::instances(&url).await?;
            rows.into_iter().next().context("no row yet")
        },
    )
    .await?;
    assert!(first.api_server);
    wait_for_ok(
        "two instance heartbeats",
        Duration::from_secs(4 * POLL_S + 3),
        CHECK,
        || async {
            let row = joc::instances(&url)
                .await?
                .into_iter()
                .next()
                .context("row")?;
            ensure!(
                row.heart_beat >= first.heart_beat + 2,
                "heartbeat {}",
                row.heart_beat
            );
            anyhow::Ok(())
        },
    )
    .await?;
    assert_eq!(joc::cluster_row(&url).await?, None);
    let (code, body) = post_json(
        &addr,
        "/joc/api/joc/cluster/switch_member",
        r#"{"memberId":"someone:00"}"#,
    )
    .await?;
    assert_eq!(code, 420, "{body}");
    assert_eq!(
        body["error"]["message"],
        "JocServiceException: db cluster not found"
    );
    let stopped = process.terminate(Duration::from_secs(10)).await?;
    ensure!(stopped.status.success() && !stopped.forced, "{stopped:?}");
    Ok(())
}

// ---------------------------------------------------------------------------
// The harness: the image's pod layout on the fake kubelet (docs/joc-facts.md fact 3, 8)
// ---------------------------------------------------------------------------

/// A pod of the image's layout (contract standin/operator) on the fake
/// kubelet: `joc-image-files` writes the image's files, the cockpit reads
/// them through a fake JETTY_BASE (subPath mounts included; the
/// configuration here comes from a Secret, which `joc-config` writes in the
/// operator's pods), its password from a secretKeyRef; a JVM killed inside
/// the container is restarted by the liveness probe.
#[tokio::test]
async fn postgres_image_layout_pod_runs_and_liveness_restarts_a_dead_jvm() -> Result<()> {
    use joc_ha_tests::stack::{JETTY_BASE, JOC_DATA_DIR, JocRunner};
    use k8s_openapi::api::core::v1::{Pod, Secret};
    use kube::api::{Api, PostParams};

    let db = TestDb::start(Backend::Postgres).await?;
    let url = db.url();
    register(&url).await?;
    let plane = joc_ha_tests::controlplane::ControlPlane::start().await?;
    let client = plane.client();
    plane.create_namespace("js7").await?;
    let periods = tempfile::Builder::new()
        .prefix("joc-standin-pod-")
        .tempdir()?;
    let kubelet = joc_ha_tests::kubelet::FakeKubelet::start(
        client.clone(),
        joc_ha_tests::kubelet::FakeKubeletConfig::new(&plane)
            .with_runner(JocRunner::new(None, periods.path().to_path_buf())?)
            .with_restart_backoff(Duration::from_millis(500)),
    )
    .await?;
    let (jdbc, user, _) = joc::sqlx_to_jdbc(&url)?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "joc-test"},
        "stringData": {
            "password": joc_ha_tests::db::TEST_PASSWORD,
            "joc.properties": format!(
                "cluster_id = joc\nordering = 7\ncreate_db_tables = true\ncluster_polling_interval = {POLL_S}\n\
                 cluster_heart_beat_exceeded_interval = {EXCEEDED_S}\nhibernate_configuration_file = hibernate.cfg.xml\n"),
            "hibernate.cfg.xml": joc::render_hibernate_cfg(&jdbc, user.as_deref(), Some("${JS7_DBMS_PASSWORD}")),
        }
    }))?;
    Api::<Secret>::namespaced(client.clone(), "js7")
        .create(&PostParams::default(), &secret)
        .await?;
    let resources = format!("{JETTY_BASE}/resources/joc");
    let probe = serde_json::json!({"httpGet": {"path": "/joc/api/version", "port": "http"}, "periodSeconds": 1, "failureThreshold": 2});
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "joc-0"},
        "spec": {
            "volumes": [
                {"name": "joc-resources", "emptyDir": {"medium": "Memory"}},
                {"name": "joc-classes", "emptyDir": {"medium": "Memory"}},
                {"name": "test-config", "secret": {"secretName": "joc-test"}},
            ],
            "initContainers": [{
                "name": "joc-image-files", "image": "sosberlin/js7:joc-2-8-1",
                "command": ["sh", "-c", "cp -a ... (played by joc-standin image-files)"],
                "volumeMounts": [
                    {"name": "joc-resources", "mountPath": "/joc-ha/image/resources"},
                    {"name": "joc-classes", "mountPath": "/joc-ha/image/classes"},
                ],
            }],
            "containers": [{
                "name": "joc", "image": "sosberlin/js7:joc-2-8-1",
                "ports": [{"name": "http", "containerPort": 4446}],
                "env": [
                    {"name": "RUN_JS_HTTP_PORT", "value": "4446"},
                    {"name": "JS7_DBMS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "joc-test", "key": "password"}}},
                ],
                "readinessProbe": probe,
                "livenessProbe": probe,
                "volumeMounts": [
                    {"name": "joc-resources", "mountPath": resources},
                    {"name": "test-config", "mountPath": format!("{resources}/joc.properties"), "subPath": "joc.properties", "readOnly": true},
                    {"name": "test-config", "mountPath": format!("{resources}/hibernate.cfg.xml"), "subPath": "hibernate.cfg.xml", "readOnly": true},
                    {"name": "joc-classes", "mountPath": format!("{JETTY_BASE}/webapps/joc/WEB-INF/classes/joc-settings.properties"), "subPath": "joc-settings.properties", "readOnly": true},
                ],
            }],
        }
    }))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "js7");
    pods.create(&PostParams::default(), &pod).await?;
    let ready = |restarts: i32| {
        let pods = pods.clone();
        async move {
            let pod = pods.get("joc-0").await?;
            let status = pod.status.context("no status")?;
            let joc = status
                .container_statuses
                .iter()
                .flatten()
                .find(|c| c.name == "joc")
                .context("no joc status")?;
            ensure!(
                joc.ready && joc.restart_count >= restarts,
                "joc ready {} restarts {}",
                joc.ready,
                joc.restart_count
            );
            anyhow::Ok(joc.restart_count)
        }
    };
    wait_for_ok("joc-0's JOC Ready", Duration::from_secs(60), CHECK, || {
        ready(0)
    })
    .await?;
    let member = joc::member_id("joc-0", JOC_DATA_DIR);
    let row = wait_for_ok(
        "joc-0's instance row",
        Duration::from_secs(20),
        CHECK,
        || async {
            joc::instances(&url)
                .await?
                .into_iter()
                .find(|i| i.member_id == member)
                .context("no row")
        },
    )
    .await?;
    assert_eq!(
        row.ordering, 7,
        "ordering from the subPath-mounted joc.properties"
    );
    assert!(
        !row.api_server,
        "member by the image's joc-settings.properties"
    );
    let first = kubelet
        .process("js7", "joc-0", "joc")
        .context("joc process")?;
    first.signal(nix::sys::signal::Signal::SIGUSR1)?;
    let restarts = wait_for_ok(
        "liveness restarts the container",
        Duration::from_secs(30),
        CHECK,
        || ready(1),
    )
    .await?;
    assert!(restarts >= 1);
    let second = kubelet
        .process("js7", "joc-0", "joc")
        .context("joc process")?;
    assert_ne!(first.pid(), second.pid(), "a new process");
    Ok(())
}
