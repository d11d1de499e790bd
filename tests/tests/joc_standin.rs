//! The JOC cluster-service stand-in (`joc-standin`, `joc_ha_tests::joc`)
//! behaves like JOC Cockpit's `JocCluster` on PostgreSQL and MariaDB: one
//! active member, takeover after the heartbeat-exceeded interval by database
//! time, manual switch-over through `switch_member` with JOC's refusals, and a
//! clean shutdown that lets a standby take over at its next poll. Plus unit
//! tests of the configuration readers and the member id.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use joc_ha_tests::db::{Backend, TestDb, free_port};
use joc_ha_tests::joc::{self, HibernateConfig, JocProperties};
use joc_ha_tests::process::ManagedProcess;
use joc_ha_tests::stack::workspace_binary;
use joc_ha_tests::wait::{http_get, wait_for_ok};
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
    assert_eq!(defaults.cluster_id, "joc");
    assert_eq!(defaults.ordering, 0);
    assert!(!defaults.is_api_server());

    let text = "! comment\ncluster_id = api\ntitle: Primary \\\n  JOC\nordering 7\n\
                cluster_polling_interval=5\ncluster_heart_beat_exceeded_interval = 11\n\
                cluster_polling_wait_interval_on_error=1\nhibernate_configuration_file = h.xml\n";
    let p = JocProperties::parse(text)?;
    assert!(p.is_api_server());
    assert_eq!(p.title.as_deref(), Some("Primary JOC"));
    assert_eq!(p.ordering, 7);
    assert_eq!(p.polling_interval_s, 5);
    assert_eq!(p.heart_beat_exceeded_interval_s, 11);
    assert_eq!(p.polling_wait_interval_on_error_s, 1);
    assert_eq!(p.hibernate_configuration_file, "h.xml");
    assert!(JocProperties::parse("cluster_polling_interval = soon\n").is_err());

    let rendered = JocProperties::parse(&joc::render_joc_properties(1, 3, "joc"))?;
    assert_eq!(rendered.polling_interval_s, 1);
    assert_eq!(rendered.heart_beat_exceeded_interval_s, 3);
    assert_eq!(rendered.cluster_id, "joc");
    Ok(())
}

#[test]
fn heart_beat_exceeded_is_whole_seconds_strictly_greater() {
    assert!(!joc::is_heart_beat_exceeded(160, Some(100), 60));
    assert!(joc::is_heart_beat_exceeded(161, Some(100), 60));
    assert!(joc::is_heart_beat_exceeded(0, None, 60));
}

// ---------------------------------------------------------------------------
// Stand-in processes
// ---------------------------------------------------------------------------

struct Standin {
    host: String,
    member_id: String,
    addr: String,
    periods: PathBuf,
    process: ManagedProcess,
}

impl Standin {
    fn start(dir: &Path, host: &str, resources: &Path, via_env_hostname: bool) -> Result<Standin> {
        let data_dir = dir.join(format!("data-{host}"));
        std::fs::create_dir_all(&data_dir)?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let periods = dir.join(format!("{host}.periods.jsonl"));
        let mut command = Command::new(workspace_binary("joc-standin")?);
        // No --data-dir: the data directory is the working directory, as user.dir.
        command
            .current_dir(&data_dir)
            .arg("--resources-dir")
            .arg(resources)
            .args(["--http-addr", &addr])
            .arg("--periods-file")
            .arg(&periods)
            .env("JS7_DBMS_PASSWORD", joc_ha_tests::db::TEST_PASSWORD);
        if via_env_hostname {
            command.env("HOSTNAME", host);
        } else {
            command.env_remove("HOSTNAME").args(["--hostname", host]);
        }
        let process = ManagedProcess::spawn(command, dir.join(format!("{host}.log")))?;
        let data_dir = data_dir.to_str().context("utf-8 temp path")?.to_owned();
        Ok(Standin {
            host: host.to_owned(),
            member_id: joc::member_id(host, &data_dir),
            addr,
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

    async fn switch_member(&self, body: &str) -> Result<(u16, Value)> {
        post_json(&self.addr, "/joc/api/joc/cluster/switch_member", body).await
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
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("POST: no answer within 10 s")??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    Ok((code, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// Resources folder: joc.properties and a hibernate.cfg.xml whose password
/// is JOC's `${JS7_DBMS_PASSWORD}` placeholder (resolved from the env).
fn write_resources(dir: &Path, url: &str, cluster_id: &str) -> Result<PathBuf> {
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

async fn cluster_behaves_like_joc(backend: Backend) -> Result<()> {
    let started = Instant::now();
    let db = TestDb::start(backend).await?;
    let url = db.url();
    // The installer's part; twice at once must be harmless.
    let (a, b) = tokio::join!(joc::create_schema(&url), joc::create_schema(&url));
    a?;
    b?;
    let dir = tempfile::Builder::new().prefix("joc-standin-").tempdir()?;
    let resources = write_resources(dir.path(), &url, "joc")?;
    let api_resources = write_resources(dir.path(), &url, "api")?;

    let s0 = Standin::start(dir.path(), "joc-0", &resources, false)?;
    let s1 = Standin::start(dir.path(), "joc-1", &resources, true)?;
    let s2 = Standin::start(dir.path(), "joc-2", &resources, true)?;
    let api = Standin::start(dir.path(), "api-0", &api_resources, true)?;
    let all = [&s0, &s1, &s2, &api];
    let result = scenarios(&url, &s0, &s1, &s2, &api).await;
    if let Err(error) = result {
        let mut logs = String::new();
        for m in all {
            logs.push_str(&format!("\n--- {} ---\n{}", m.host, m.process.log_tail(40)));
        }
        // Keep the folder for a post-mortem.
        let kept = dir.keep();
        bail!(
            "{}: {error:#}\n(logs in {}){logs}",
            backend.name(),
            kept.display()
        );
    }
    eprintln!(
        "{}: JOC stand-in scenarios passed in {:.1?}",
        backend.name(),
        started.elapsed()
    );
    Ok(())
}

async fn scenarios(
    url: &str,
    s0: &Standin,
    s1: &Standin,
    s2: &Standin,
    api: &Standin,
) -> Result<()> {
    let members = [s0, s1, s2];
    for m in [s0, s1, s2, api] {
        wait_for_ok(
            &format!("GET / of {}", m.host),
            Duration::from_secs(15),
            CHECK,
            || m.status(),
        )
        .await?;
    }

    // (1) Three start at once: one is JOC-active, the others standby.
    let first = wait_for_ok(
        "one JOC-active stand-in",
        Duration::from_secs(20),
        CHECK,
        || one_consistent_active(url, &members),
    )
    .await?;
    for m in [s0, s1, s2, api] {
        let status = m.status().await?;
        assert_eq!(
            status["memberId"],
            m.member_id.as_str(),
            "member id of {}",
            m.host
        );
        assert_eq!(status["member"], m.host.as_str());
    }
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
    for row in &instances {
        let m = [s0, s1, s2, api]
            .into_iter()
            .find(|m| m.member_id == row.member_id)
            .context("instance row of an unknown member")?;
        assert_eq!(
            row.api_server,
            m.host == "api-0",
            "API_SERVER of {}",
            m.host
        );
        assert_eq!(
            row.cluster_id,
            if m.host == "api-0" { "api" } else { "joc" }
        );
        assert_eq!(
            row.title.as_deref(),
            Some(m.host.as_str()),
            "TITLE defaults to the hostname"
        );
        assert_eq!(
            row.uri.as_deref(),
            Some(format!("http://{}", m.addr).as_str())
        );
        assert!(
            row.is_fresh(EXCEEDED_S),
            "{} heartbeat age {}",
            m.host,
            row.age_s
        );
    }

    // (3) Refusals, as JOC words them.
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
    // Unknown target: JOC only logs it; 200 and nothing written.
    let before = joc::cluster_row(url).await?.context("row")?;
    let (code, body) = s0.switch_member(r#"{"memberId":"nobody:00"}"#).await?;
    assert_eq!(code, 200, "unknown target: {body}");
    let after = joc::cluster_row(url).await?.context("row")?;
    assert_eq!(
        after.switch_member_id, None,
        "nothing written for an unknown target"
    );
    assert_eq!(after.member_id, before.member_id);

    // (3) Switch-over requested at a standby, to itself: the active hands over
    // at its next poll, the target clears the switch fields at its own.
    let target = members
        .iter()
        .find(|m| m.member_id != first)
        .context("a standby")?;
    let asked = Instant::now();
    let (code, body) = target
        .switch_member(&format!(r#"{{"memberId":"{}"}}"#, target.member_id))
        .await?;
    assert_eq!(
        (code, body["state"].as_str()),
        (200, Some("SWITCH")),
        "{body}"
    );
    let request = format!(r#"{{"memberId":"{}"}}"#, target.member_id);
    let mut asked_again = false;
    wait_for_ok(
        "switch to the standby completed",
        Duration::from_secs(2 * POLL_S + 4),
        CHECK,
        || {
            let request = request.clone();
            let first = &first;
            // After 1.5 polls the active has polled since the request.
            let again = !asked_again && asked.elapsed() > Duration::from_millis(1500 * POLL_S);
            asked_again |= again;
            async move {
                let row = joc::cluster_row(url).await?.context("no row")?;
                if again && row.member_id == *first && row.switch_member_id.is_none() {
                    // The active's full-row update (read before our write) can
                    // overwrite the request: JOC's last-writer-wins. Ask again.
                    eprintln!("switch request overwritten by the active's heartbeat; asking again");
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

    // (3) Switch-over requested at the active: it hands over at once.
    let old = target;
    let next = members
        .iter()
        .find(|m| m.member_id != old.member_id)
        .context("another member")?;
    let (code, body) = old
        .switch_member(&format!(r#"{{"memberId":"{}"}}"#, next.member_id))
        .await?;
    assert_eq!(
        (code, body["state"].as_str()),
        (200, Some("SWITCH")),
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
        Duration::from_secs(2 * POLL_S + 4),
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
    let (code, body) = s0
        .switch_member(&format!(r#"{{"memberId":"{}"}}"#, next.member_id))
        .await?;
    assert_eq!(
        (code, body["state"].as_str()),
        (200, Some("ALREADY_STARTED")),
        "{body}"
    );

    // (2) The active freezes: a standby takes over once the heartbeat is
    // exceeded by database time, not before.
    let frozen = by_id(&members, &next.member_id)?;
    frozen.process.freeze()?;
    let frozen_at = joc::db_now(url).await?;
    // A statement sent just before SIGSTOP lands within this second.
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
        "takeover at db {} only {} s after the last heartbeat {} (must be > {EXCEEDED_S})",
        taken.heart_beat,
        taken.heart_beat - last.heart_beat,
        last.heart_beat
    );
    eprintln!(
        "takeover {} s after the frozen active's last heartbeat (db time)",
        taken.heart_beat - last.heart_beat
    );
    frozen.process.thaw()?;
    let settled = wait_for_ok(
        "one active after the thaw",
        Duration::from_secs(2 * POLL_S + 4),
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
    if settled == frozen.member_id {
        // Frozen between reading and writing JOC_CLUSTER, its full-row update
        // landed after the takeover: JOC's last-writer-wins, not a stand-in bug.
        eprintln!("the thawed member's in-flight heartbeat won the row back");
    } else {
        assert!(!frozen.active().await?, "the thawed member stepped down");
    }

    // (4) Clean shutdown of the active deletes its row; a standby takes over at
    // its next poll, well before the exceeded interval.
    let active_id = one_consistent_active(url, &members).await?;
    let leaving = by_id(&members, &active_id)?;
    let stopped = leaving.process.terminate(Duration::from_secs(10)).await?;
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
    eprintln!("takeover after a clean shutdown: {took:.1?}");
    let periods = std::fs::read_to_string(&leaving.periods)?;
    let last_event = periods
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .context("no periods recorded")?;
    assert_eq!(
        last_event["event"], "standby",
        "services stopped on shutdown"
    );
    // The API server never touched JOC_CLUSTER.
    assert!(!api.active().await?);
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

/// SQLite (the demo's single-host database): an API server alone never
/// creates JOC_CLUSTER, so a switch request finds "db cluster not found".
#[tokio::test]
async fn sqlite_api_server_alone_leaves_no_cluster_row() -> Result<()> {
    let db = TestDb::start(Backend::Sqlite).await?;
    let url = db.url();
    let dir = tempfile::Builder::new().prefix("joc-standin-").tempdir()?;
    let resources = write_resources(dir.path(), &url, "api")?;
    let api = Standin::start(dir.path(), "api-0", &resources, true)?;
    wait_for_ok("GET / of api-0", Duration::from_secs(15), CHECK, || {
        api.status()
    })
    .await?;
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
    // Two polls later there is still no JOC_CLUSTER row.
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
    let (code, body) = api.switch_member(r#"{"memberId":"someone:00"}"#).await?;
    assert_eq!(code, 420, "{body}");
    assert_eq!(
        body["error"]["message"],
        "JocServiceException: db cluster not found"
    );
    let (code, body) = api
        .switch_member(&format!(r#"{{"memberId":"{}"}}"#, api.member_id))
        .await?;
    assert_eq!(code, 420, "{body}");
    assert_eq!(
        body["error"]["message"],
        "JocServiceException: [manual_switchover][api-0]The action to switch to an API server is not permitted"
    );
    let stopped = api.process.terminate(Duration::from_secs(10)).await?;
    ensure!(stopped.status.success() && !stopped.forced, "{stopped:?}");
    Ok(())
}
