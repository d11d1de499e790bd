//! The member: JocCluster's per-poll logic

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sqlx::{AnyConnection, AssertSqlSafe, Connection};

use super::id::{java_path_string, member_id};
use super::properties::{JocProperties, JocSettings, SecurityLevel};
use super::reads::{
    ClusterRow, Instance, InstanceTuple, instance_of, instance_select, read_cluster, read_instance,
};
use super::services::Services;
use super::sql::{connect, epoch, from_epoch, int, is_heart_beat_exceeded, now_utc, sql};
use super::switch::{ActiveMemberHandler, SwitchError, SwitchState, wait_for};
use super::{CLUSTER_ROW_ID, Dialect, MSG_SWITCH_TO_API_SERVER, STANDIN_VERSION};

// Files cited below, in `sos-berlin/sos-components` (master; the same rules on
// release/2.7 and release/2.8 unless said):
// JC  = sos-joc/sos-joc-cluster/src/main/java/com/sos/joc/cluster/JocCluster.java
// AMH = sos-joc/sos-joc-cluster/src/main/java/com/sos/joc/cluster/JocClusterActiveMemberHandler.java
// JCC = sos-joc/sos-joc-cluster/src/main/java/com/sos/joc/cluster/configuration/JocClusterConfiguration.java
// DBL = sos-joc/sos-joc-cluster/src/main/java/com/sos/joc/cluster/db/DBLayerJocCluster.java
// JI  = sos-joc/sos-joc-cluster/src/main/java/com/sos/joc/cluster/instances/JocInstance.java
// CI  = sos-webservices/sos-webservices-joc-global/src/main/java/com/sos/joc/db/cluster/CheckInstance.java

/// A timestamp to write: the database's UTC now, or a value read earlier.
#[derive(Debug, Clone, Copy)]
enum Ts {
    Now,
    Epoch(Option<i64>),
}

/// JOC's `StartupMode` as far as the cluster loop uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupMode {
    Automatic,
    Failover,
    ManualSwitchover,
}

impl StartupMode {
    pub fn name(self) -> &'static str {
        match self {
            StartupMode::Automatic => "automatic",
            StartupMode::Failover => "failover",
            StartupMode::ManualSwitchover => "manual_switchover",
        }
    }
}

/// Whether JOC holds a cluster license (`JCC.clusterMode`: the licensed
/// class from `js7-license.jar` loads, and says "use").
#[derive(Debug, Clone)]
pub enum License {
    /// LEGACY LAYOUT ONLY (remove with `--resources-dir`): assumed present.
    Assumed,
    /// Licensed iff this file exists: `<JETTY_BASE>/lib/ext/joc/js7-license.jar`,
    /// which the image's entrypoint copies there only when
    /// `resources/joc/license` exists (docs/joc-facts.md fact 3, 10). Looked at on every re-read.
    Jar(PathBuf),
}

impl License {
    pub fn present(&self) -> bool {
        match self {
            License::Assumed => true,
            License::Jar(path) => path.is_file(),
        }
    }
}

/// Who this stand-in is (`JocConfiguration`, `Globals`).
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub hostname: String,
    /// `Paths.get(user.dir).toString()`.
    pub data_directory: String,
    pub member_id: String,
    pub properties: JocProperties,
    /// From joc-settings.properties (docs/joc-facts.md fact 1); legacy: `cluster_id = api`.
    pub api_server: bool,
    /// `ordering`, checked (0–99) before the member is built.
    pub ordering: i32,
    pub security_level: SecurityLevel,
    pub license: License,
    /// How long `readCurrentDbInfos` sleeps when no Controller is registered:
    /// JOC's is 1 min (JC `waitFor(60)`); tests may shorten it.
    pub controllers_retry: Duration,
    /// The JVM's start, epoch seconds by the process clock (JOC_INSTANCES.STARTED_AT, docs/joc-facts.md fact 18).
    pub started_at_s: i64,
    /// The JVM's time zone (JOC_INSTANCES.TIMEZONE).
    pub timezone: String,
}

impl MemberConfig {
    pub fn new(
        hostname: &str,
        data_dir: &str,
        properties: JocProperties,
        settings: JocSettings,
        ordering: i32,
        license: License,
    ) -> Self {
        let data_directory = java_path_string(data_dir);
        MemberConfig {
            hostname: hostname.to_owned(),
            member_id: member_id(hostname, &data_directory),
            data_directory,
            properties,
            api_server: settings.api_server,
            ordering,
            security_level: settings.security_level,
            license,
            controllers_retry: Duration::from_secs(60),
            started_at_s: jiff::Timestamp::now().as_second(),
            timezone: jvm_time_zone(),
        }
    }

    pub fn api_server(&self) -> bool {
        self.api_server
    }

    /// `Globals.getClusterId`: `api` for an API server, else `joc`.
    pub fn cluster_id(&self) -> &'static str {
        if self.api_server { "api" } else { "joc" }
    }

    /// `JocConfiguration`: `title = isEmpty(jocTitle) ? hostname : jocTitle`, truncated to 30.
    pub fn title(&self) -> String {
        truncate(
            self.properties.title.as_deref().unwrap_or(&self.hostname),
            30,
        )
    }

    /// `Globals.getJocId`: `clusterId + "#" + ordering`.
    pub fn joc_id(&self) -> String {
        format!("{}#{}", self.cluster_id(), self.ordering)
    }
}

/// The JVM's default zone: `TZ` if set, else UTC (ours: the JVM also reads /etc/localtime).
fn jvm_time_zone() -> String {
    std::env::var("TZ")
        .ok()
        .filter(|z| !z.is_empty())
        .unwrap_or_else(|| "Etc/UTC".to_owned())
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// JCC defaults for the switch-over retries on database errors:
/// `cluster_switch_member_wait_counter_on_error` 10 ×
/// `cluster_switch_member_wait_interval_on_error` 2 s (docs/joc-facts.md fact 17).
const SWITCH_RETRIES: u32 = 10;
const SWITCH_RETRY_WAIT: Duration = Duration::from_secs(2);

/// `CheckInstance` looks at liveness before the cluster service has read
/// joc.properties: `JocCluster.isHeartBeatExceeded` then falls back to the
/// default configuration, 60 s (JC `isHeartBeatExceeded`, JCC defaults;
/// ours: inferred from the order of the servlet's init).
const CHECK_INSTANCE_EXCEEDED_S: u64 = 60;

/// One JOC instance's cluster service (`JocCluster` + `JocInstance`).
pub struct Member {
    pub config: MemberConfig,
    url: String,
    dialect: Dialect,
    conn: Option<AnyConnection>,
    pub services: Services,
    amh: ActiveMemberHandler,
    closed: tokio::sync::watch::Receiver<bool>,
    first_run: bool,
    instance_processed: bool,
}

impl Member {
    /// `closed` turns true when the JVM shuts down (JC `close`).
    pub fn new(
        config: MemberConfig,
        url: &str,
        services: Services,
        closed: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Member> {
        let dialect = Dialect::of_url(url)?;
        let amh = ActiveMemberHandler {
            url: url.to_owned(),
            dialect,
            member_id: config.member_id.clone(),
            security_level: config.security_level,
            license: config.license.clone(),
            controllers_retry: config.controllers_retry,
            services: services.clone(),
            closed: closed.clone(),
        };
        Ok(Member {
            dialect,
            url: url.to_owned(),
            config,
            conn: None,
            services,
            amh,
            closed,
            first_run: true,
            instance_processed: false,
        })
    }

    /// The services' handler, to run a poll's start or stop outside the lock.
    pub fn handler(&self) -> ActiveMemberHandler {
        self.amh.clone()
    }

    fn me(&self) -> &str {
        &self.config.member_id
    }

    fn licensed(&self) -> bool {
        self.config.license.present()
    }

    fn exceeded(&self, now: i64, hb: Option<i64>) -> bool {
        is_heart_beat_exceeded(
            now,
            hb,
            self.config.properties.heart_beat_exceeded_interval_s,
        )
    }

    /// Takes the connection out (reconnecting if needed); a failed or
    /// cancelled operation drops it, so the next one reconnects.
    async fn take_conn(&mut self) -> Result<AnyConnection> {
        match self.conn.take() {
            Some(c) => Ok(c),
            None => connect(&self.url).await,
        }
    }

    async fn with_conn<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut AnyConnection, Dialect) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.take_conn().await?;
        let result = f(&mut conn, self.dialect).await;
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }

    /// CI `check`: the ordering must not be held by another live instance
    /// (any cluster id: CI compares the ordering only). A dead holder's row
    /// is taken over: the own row goes, that row gets this member id. Returns
    /// JOC's refusal text when it refuses (docs/joc-facts.md fact 2). The non-unique
    /// orderings repair of CI is not modelled.
    pub async fn check_instance(&mut self) -> Result<std::result::Result<(), String>> {
        let c = self.config.clone();
        self.with_conn(async move |conn, d| {
            let q = sql(
                d,
                &format!(r#"{} WHERE "ORDERING" = ? ORDER BY "ID""#, instance_select(d)),
            );
            let holder: Option<InstanceTuple> = sqlx::query_as(AssertSqlSafe(q))
                .bind(i64::from(c.ordering))
                .fetch_optional(&mut *conn)
                .await
                .context("reading JOC_INSTANCES")?;
            let Some(holder) = holder.map(instance_of) else {
                return Ok(Ok(()));
            };
            if holder.member_id == c.member_id {
                return Ok(Ok(()));
            }
            if holder.is_fresh(CHECK_INSTANCE_EXCEEDED_S) {
                return Ok(Err(format!(
                    "There is already a running JOC instance with ID '{}#{}'. You can modify the 'ordering' in the joc.properties file.",
                    holder.cluster_id, c.ordering
                )));
            }
            let mut tx = conn.begin().await?;
            sqlx::query(AssertSqlSafe(sql(
                d,
                r#"DELETE FROM JOC_INSTANCES WHERE "MEMBER_ID" = ?"#,
            )))
            .bind(&c.member_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(AssertSqlSafe(sql(
                d,
                r#"UPDATE JOC_INSTANCES SET "MEMBER_ID" = ?, "DATA_DIRECTORY" = ?, "API_SERVER" = ?, "CLUSTER_ID" = ? WHERE "MEMBER_ID" = ?"#,
            )))
            .bind(&c.member_id)
            .bind(&c.data_directory)
            .bind(i64::from(c.api_server))
            .bind(c.cluster_id())
            .bind(&holder.member_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(
                "[check instance][took over the row of the dead instance {}]",
                holder.member_id
            );
            Ok(Ok(()))
        })
        .await
    }

    /// Start-up (`JocClusterService.start` → JC `getInstance`): JI
    /// `getInstance` registers or refreshes the JOC_INSTANCES row, the stored
    /// settings are read from JOC_CONFIGURATIONS, then `tryDeleteActiveCurrentMember`.
    /// JOC retries a failure after 30 s; the caller does.
    pub async fn start(&mut self) -> Result<()> {
        self.register_instance().await?;
        self.read_stored_settings().await?;
        self.instance_processed = true;
        let deleted = self.try_delete_active_current_member().await?;
        if deleted > 0 {
            tracing::info!("[start][deleted own JOC_CLUSTER row left from a previous run]");
        }
        Ok(())
    }

    /// JC `getStoredSettings`: the GLOBALS of JOC_CONFIGURATIONS (the table
    /// must exist; the settings themselves do not matter to the stand-in).
    async fn read_stored_settings(&mut self) -> Result<()> {
        self.with_conn(async |conn, d| {
            let q = sql(
                d,
                r#"SELECT COUNT(*) FROM JOC_CONFIGURATIONS WHERE "CONFIGURATION_TYPE" = 'GLOBALS'"#,
            );
            let _: i64 = sqlx::query_scalar(AssertSqlSafe(q))
                .fetch_one(&mut *conn)
                .await
                .context("reading JOC_CONFIGURATIONS")?;
            Ok(())
        })
        .await
    }

    /// JI `getInstance` (docs/joc-facts.md fact 18): OS_ID from INV_OPERATING_SYSTEMS (JI
    /// `getOS`: the host's row, inserted if missing), insert the row if
    /// missing (URI not written, TIMEZONE the JVM's, STARTED_AT from the JVM
    /// clock, HEART_BEAT the database's UTC now), else update it as a start in
    /// mode automatic does (all but DATA_DIRECTORY, OS_ID, TIMEZONE and URI).
    async fn register_instance(&mut self) -> Result<()> {
        let c = self.config.clone();
        let api = i64::from(c.api_server());
        let title = c.title();
        let version = truncate(STANDIN_VERSION, 30);
        self.with_conn(async move |conn, d| {
            let mut tx = conn.begin().await?;
            let os_id = os_id(&mut tx, d, &c.hostname).await?;
            let exists: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql(
                d,
                &format!(r#"SELECT {} FROM JOC_INSTANCES WHERE "MEMBER_ID" = ?"#, int(d, "\"ID\"")),
            )))
            .bind(&c.member_id)
            .fetch_optional(&mut *tx)
            .await?;
            let now = now_utc(d);
            let started = from_epoch(d);
            if exists.is_none() {
                let q = sql(
                    d,
                    &format!(
                        r#"INSERT INTO JOC_INSTANCES ("CLUSTER_ID", "MEMBER_ID", "OS_ID", "DATA_DIRECTORY", "SECURITY_LEVEL", "TIMEZONE", "STARTED_AT", "TITLE", "ORDERING", "URI", "HEART_BEAT", "API_SERVER", "VERSION") VALUES (?, ?, ?, ?, ?, ?, {started}, ?, ?, NULL, {now}, ?, ?)"#
                    ),
                );
                sqlx::query(AssertSqlSafe(q))
                    .bind(c.cluster_id())
                    .bind(&c.member_id)
                    .bind(os_id)
                    .bind(&c.data_directory)
                    .bind(c.security_level.name())
                    .bind(&c.timezone)
                    .bind(c.started_at_s)
                    .bind(&title)
                    .bind(i64::from(c.ordering))
                    .bind(api)
                    .bind(&version)
                    .execute(&mut *tx)
                    .await
                    .context("inserting the JOC_INSTANCES row")?;
                tracing::info!(member_id = %c.member_id, "[instance][inserted]");
            } else {
                let q = sql(
                    d,
                    &format!(
                        r#"UPDATE JOC_INSTANCES SET "SECURITY_LEVEL" = ?, "CLUSTER_ID" = ?, "ORDERING" = ?, "TITLE" = ?, "STARTED_AT" = {started}, "HEART_BEAT" = {now}, "API_SERVER" = ?, "VERSION" = ? WHERE "MEMBER_ID" = ?"#
                    ),
                );
                sqlx::query(AssertSqlSafe(q))
                    .bind(c.security_level.name())
                    .bind(c.cluster_id())
                    .bind(i64::from(c.ordering))
                    .bind(&title)
                    .bind(c.started_at_s)
                    .bind(api)
                    .bind(&version)
                    .bind(&c.member_id)
                    .execute(&mut *tx)
                    .await
                    .context("updating the JOC_INSTANCES row")?;
                tracing::info!(member_id = %c.member_id, "[instance][updated]");
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }
    pub async fn try_delete_active_current_member(&mut self) -> Result<u64> {
        let me = self.me().to_owned();
        self.with_conn(async move |conn, d| {
            let q = sql(
                d,
                r#"DELETE FROM JOC_CLUSTER WHERE "MEMBER_ID" = ? AND "SWITCH_MEMBER_ID" IS NULL"#,
            );
            Ok(sqlx::query(AssertSqlSafe(q))
                .bind(me)
                .execute(&mut *conn)
                .await
                .context("deleting the own JOC_CLUSTER row")?
                .rows_affected())
        })
        .await
    }

    async fn update_instance_heart_beat(&mut self) -> Result<()> {
        let me = self.me().to_owned();
        self.with_conn(async move |conn, d| {
            let q = sql(
                d,
                &format!(
                    r#"UPDATE JOC_INSTANCES SET "HEART_BEAT" = {} WHERE "MEMBER_ID" = ?"#,
                    now_utc(d)
                ),
            );
            sqlx::query(AssertSqlSafe(q))
                .bind(me)
                .execute(&mut *conn)
                .await
                .context("updating the instance heartbeat")?;
            Ok(())
        })
        .await
    }

    async fn get_cluster(&mut self) -> Result<Option<ClusterRow>> {
        self.with_conn(async |conn, d| read_cluster(conn, d).await)
            .await
    }

    async fn get_instance(&mut self, member_id: &str) -> Result<Option<Instance>> {
        let member_id = member_id.to_owned();
        self.with_conn(async move |conn, d| read_instance(conn, d, &member_id).await)
            .await
    }

    async fn db_now(&mut self) -> Result<i64> {
        self.with_conn(async |conn, d| {
            let q = format!("SELECT {}", epoch(d, now_utc(d)));
            Ok(sqlx::query_scalar(AssertSqlSafe(q))
                .fetch_one(&mut *conn)
                .await?)
        })
        .await
    }

    /// `INSERT` of a new `DBItemJocCluster` (id `cluster`, heartBeat now, memberId me).
    async fn insert_cluster(&mut self) -> Result<()> {
        let me = self.me().to_owned();
        self.with_conn(async move |conn, d| {
            let q = sql(
                d,
                &format!(
                    r#"INSERT INTO JOC_CLUSTER ("ID", "MEMBER_ID", "HEART_BEAT") VALUES ('{CLUSTER_ROW_ID}', ?, {})"#,
                    now_utc(d)
                ),
            );
            sqlx::query(AssertSqlSafe(q))
                .bind(me)
                .execute(&mut *conn)
                .await
                .context("inserting the JOC_CLUSTER row")?;
            Ok(())
        })
        .await
    }

    /// Hibernate `session.update(item)`: every column of the row written from
    /// the entity (last writer wins; the newest entity has no @Version).
    /// A vanished row is an error, as Hibernate's stale-state exception.
    async fn update_cluster(
        &mut self,
        member_id: &str,
        heart_beat: Ts,
        switch_member_id: Option<&str>,
        switch_heart_beat: Ts,
        row: &ClusterRow,
    ) -> Result<()> {
        let member_id = member_id.to_owned();
        let switch_member_id = switch_member_id.map(str::to_owned);
        let notification_member_id = row.notification_member_id.clone();
        let notification = row.notification.clone();
        self.with_conn(async move |conn, d| {
            let ts = |t: Ts| match t {
                Ts::Now => now_utc(d),
                Ts::Epoch(_) => from_epoch(d),
            };
            let q = sql(
                d,
                &format!(
                    r#"UPDATE JOC_CLUSTER SET "MEMBER_ID" = ?, "HEART_BEAT" = {}, "SWITCH_MEMBER_ID" = ?, "SWITCH_HEART_BEAT" = {}, "NOTIFICATION_MEMBER_ID" = ?, "NOTIFICATION" = ? WHERE "ID" = '{CLUSTER_ROW_ID}'"#,
                    ts(heart_beat),
                    ts(switch_heart_beat)
                ),
            );
            let mut query = sqlx::query(AssertSqlSafe(q)).bind(member_id);
            if let Ts::Epoch(v) = heart_beat {
                query = query.bind(v);
            }
            query = query.bind(switch_member_id);
            if let Ts::Epoch(v) = switch_heart_beat {
                query = query.bind(v);
            }
            let updated = query
                .bind(notification_member_id)
                .bind(notification)
                .execute(&mut *conn)
                .await
                .context("updating JOC_CLUSTER")?
                .rows_affected();
            if updated == 0 {
                // MySQL counts changed rows only; make sure the row is really gone.
                let present: i64 = sqlx::query_scalar(AssertSqlSafe(sql(
                    d,
                    &format!(r#"SELECT COUNT(*) FROM JOC_CLUSTER WHERE "ID" = '{CLUSTER_ROW_ID}'"#),
                )))
                .fetch_one(&mut *conn)
                .await?;
                if present == 0 {
                    bail!("the JOC_CLUSTER row was deleted by another member meanwhile (stale state)");
                }
            }
            Ok(())
        })
        .await
    }

    /// JC `tryResetCurrentInstanceHeartBeat` (clean shutdown, docs/joc-facts.md fact 12):
    /// the own JOC_INSTANCES.HEART_BEAT becomes `new Date(0)`, 1970-01-01, so
    /// the instance is stale at once.
    async fn try_reset_current_instance_heart_beat(&mut self) -> Result<u64> {
        let me = self.me().to_owned();
        self.with_conn(async move |conn, d| {
            let q = sql(
                d,
                &format!(
                    r#"UPDATE JOC_INSTANCES SET "HEART_BEAT" = {} WHERE "MEMBER_ID" = ?"#,
                    from_epoch(d)
                ),
            );
            Ok(sqlx::query(AssertSqlSafe(q))
                .bind(0_i64)
                .bind(me)
                .execute(&mut *conn)
                .await
                .context("resetting the instance heartbeat")?
                .rows_affected())
        })
        .await
    }

    /// One poll: JC `process`. Writes the instance heartbeat, then (members
    /// only) reads and handles JOC_CLUSTER; returns the start or stop of the
    /// services that JC runs in its `finally` (`performActiveMemberServices`),
    /// for the caller to run outside the lock.
    pub async fn process(&mut self) -> Result<Option<(bool, StartupMode)>> {
        let first_run = std::mem::replace(&mut self.first_run, false);
        self.update_instance_heart_beat().await?;
        if self.config.api_server() {
            // API servers never touch JOC_CLUSTER and never run the services.
            return Ok(None);
        }
        let item = self.get_cluster().await?;
        tracing::debug!("[poll][read JOC_CLUSTER]{item:?}");
        let Some((row, mode, skip_perform)) = self
            .handle_current_member_on_process(item, first_run)
            .await?
        else {
            return Ok(None);
        };
        if skip_perform {
            return Ok(None);
        }
        // JC `performActiveMemberServices`.
        let active = self.services.is_active();
        Ok(if row.member_id == self.me() {
            (!active).then_some((true, mode))
        } else {
            active.then_some((false, mode))
        })
    }

    /// JC `inactiveMemberTryStopServices`.
    async fn inactive_member_try_stop_services(&mut self) {
        if self.services.is_active() {
            tracing::info!("[automatic][start][stop services because current is inactive]");
            self.amh.perform(StartupMode::Automatic, false).await;
        }
    }

    /// JC `handleCurrentMemberOnProcess`: (row, mode, skipPerform), None for JC's `null`.
    async fn handle_current_member_on_process(
        &mut self,
        item: Option<ClusterRow>,
        first_run: bool,
    ) -> Result<Option<(ClusterRow, StartupMode, bool)>> {
        let me = self.me().to_owned();
        let licensed = self.licensed();
        let mut mode = StartupMode::Automatic;
        let mut row = match item {
            Some(row) => row,
            None => {
                if !licensed && !first_run {
                    // Without license only a first run creates the row (docs/joc-facts.md fact 10).
                    self.inactive_member_try_stop_services().await;
                    return Ok(None);
                }
                match self.insert_cluster().await {
                    Ok(()) => {
                        tracing::info!("[cluster][inserted JOC_CLUSTER row][memberId={me}]");
                        if !first_run {
                            mode = StartupMode::Failover;
                        }
                        ClusterRow {
                            member_id: me.clone(),
                            heart_beat: 0,
                            switch_member_id: None,
                            switch_heart_beat: None,
                            notification_member_id: None,
                            notification: None,
                            db_now: 0,
                        }
                    }
                    Err(error) => {
                        // SOSHibernateObjectOperationException: rollback, read again
                        // (a duplicate key means another member inserted first).
                        tracing::info!("[cluster][insert failed, reading again]{error:#}");
                        match self.get_cluster().await? {
                            Some(row) => row,
                            None => return Ok(None),
                        }
                    }
                }
            }
        };
        if row.member_id == me {
            return self
                .try_switch_active_member_on_process(row, first_run)
                .await;
        }
        if self.exceeded(row.db_now, Some(row.heart_beat)) {
            if !licensed && !first_run {
                // docs/joc-facts.md fact 10: without license a standby never fails over.
                return Ok(None);
            }
            let mut update = true;
            // "to avoid start of the current instance if a switchMember defined":
            // whatever the switch target is, an API server too (docs/joc-facts.md fact 14).
            if licensed
                && let Some(switch) = row.switch_member_id.clone()
                && switch != me
                && let Some(instance) = self.get_instance(&switch).await?
                && !self.exceeded(
                    instance.age_s + instance.heart_beat,
                    Some(instance.heart_beat),
                )
            {
                tracing::info!("[{me}][wait for switchMember]{switch}");
                update = false;
            }
            if update {
                // No version check: `sos-joc/sos-joc-db/.../joc/DBItemJocCluster.java`
                // has its @Version commented out, so two standbys that read the
                // exceeded row at once both take over and both start services;
                // the last writer stays MEMBER_ID, the other stops at its next poll.
                tracing::info!(
                    "[cluster][takeover][previous memberId={}][db][UTC]heartBeat exceeded: now-heartBeat={}s > {}s",
                    row.member_id,
                    row.db_now - row.heart_beat,
                    self.config.properties.heart_beat_exceeded_interval_s
                );
                self.update_cluster(&me, Ts::Now, None, Ts::Epoch(None), &row)
                    .await?;
                row.member_id = me.clone();
                row.switch_member_id = None;
                row.switch_heart_beat = None;
                mode = if licensed {
                    StartupMode::Failover
                } else {
                    StartupMode::Automatic
                };
            }
        } else {
            self.inactive_member_try_stop_services().await;
        }
        Ok(Some((row, mode, false)))
    }

    /// JC `trySwitchActiveMemberOnProcess`: (row, mode, skipPerform), None for JC's `null`.
    async fn try_switch_active_member_on_process(
        &mut self,
        mut row: ClusterRow,
        first_run: bool,
    ) -> Result<Option<(ClusterRow, StartupMode, bool)>> {
        let me = self.me().to_owned();
        let Some(switch) = row.switch_member_id.clone() else {
            if !self.licensed() && !self.services.is_active() && !first_run {
                // Without license a MEMBER_ID that does not run services (a
                // switch target that refused to start) never heartbeats the
                // row: its heartbeat freezes (docs/joc-facts.md fact 10).
                return Ok(None);
            }
            // The normal heartbeat of the active member: every column from
            // the row read at the start of this poll (docs/joc-facts.md fact 15).
            self.update_cluster(
                &me,
                Ts::Now,
                None,
                Ts::Epoch(row.switch_heart_beat),
                &row.clone(),
            )
            .await?;
            return Ok(Some((row, StartupMode::Automatic, false)));
        };
        let mode = StartupMode::ManualSwitchover;
        if switch == me {
            // I am the switch target and now active: clear the switch fields.
            tracing::info!("[switch][completed][memberId={me}]");
            self.update_cluster(&me, Ts::Now, None, Ts::Epoch(None), &row.clone())
                .await?;
            row.switch_member_id = None;
            row.switch_heart_beat = None;
            return Ok(Some((row, mode, false)));
        }
        let mut errors = 0;
        let mut closed = self.closed.clone();
        loop {
            let attempt = async {
                let now = self.db_now().await?;
                let mut skip_perform = false;
                let mut new_member = me.clone();
                if self.exceeded(now, row.switch_heart_beat) {
                    // docs/joc-facts.md fact 13: skipped at every poll and never cleared.
                    tracing::info!(
                        "[{}][switch][skip][newMemberId={switch}][db][UTC]switchHeartBeat={:?} exceeded",
                        mode.name(),
                        row.switch_heart_beat
                    );
                } else {
                    // docs/joc-facts.md fact 14: executed without looking at the target.
                    tracing::info!("[{}][switch][stop current]newMemberId={switch}", mode.name());
                    if self.services.is_active() {
                        self.amh.perform(mode, false).await;
                    }
                    new_member = switch.clone();
                    skip_perform = true;
                }
                // `item.setSwitchMemberId(null)` is commented out in JC: the switch fields stay.
                self.update_cluster(
                    &new_member,
                    Ts::Now,
                    Some(&switch),
                    Ts::Epoch(row.switch_heart_beat),
                    &row.clone(),
                )
                .await?;
                anyhow::Ok((new_member, skip_perform))
            }
            .await;
            match attempt {
                Ok((new_member, skip_perform)) => {
                    row.member_id = new_member;
                    return Ok(Some((row, mode, skip_perform)));
                }
                Err(error) => {
                    tracing::warn!("[{}][{errors}]{error:#}", mode.name());
                    errors += 1;
                    if errors >= SWITCH_RETRIES || *closed.borrow() {
                        return Err(error);
                    }
                    wait_for(&mut closed, SWITCH_RETRY_WAIT).await;
                }
            }
        }
    }

    /// REST `joc/cluster/switch_member` (`ClusterResourceImpl` → JC
    /// `switchMember`, `setSwitchMember`; docs/joc-facts.md fact 17). The Controller-cluster
    /// check of `ClusterResourceImpl.checkSwitchingControllerIds` is not
    /// modelled (the stand-in has no Controller cluster).
    pub async fn switch_member(
        &mut self,
        new_member_id: Option<&str>,
    ) -> Result<SwitchState, SwitchError> {
        let mode = StartupMode::ManualSwitchover;
        let Some(new) = new_member_id.filter(|s| !s.is_empty()).map(str::to_owned) else {
            return Err(SwitchError::Refused("missing newMemberId".to_owned()));
        };
        let me = self.me().to_owned();
        if new == me {
            if self.config.api_server() {
                return Err(SwitchError::Refused(format!(
                    "[{}][{}]{MSG_SWITCH_TO_API_SERVER}",
                    mode.name(),
                    self.config.title()
                )));
            }
            if self.services.is_active() {
                return Ok(SwitchState::AlreadyStarted);
            }
        }
        // JC `switchMember`: `rereadClusterMode` (1 s when licensed), then the license.
        if self.licensed() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else {
            return Err(SwitchError::MissingLicense);
        }
        let mut errors = 0;
        loop {
            match self.set_switch_member(&new).await {
                Ok(answer) => return answer,
                Err(error) => {
                    tracing::warn!("[{}][switch][{errors}]{error:#}", mode.name());
                    errors += 1;
                    if errors >= SWITCH_RETRIES {
                        return Err(SwitchError::Database(error));
                    }
                    let mut closed = self.closed.clone();
                    wait_for(&mut closed, SWITCH_RETRY_WAIT).await;
                }
            }
        }
    }

    /// JC `setSwitchMember`; the outer error is a database error (retried).
    async fn set_switch_member(&mut self, new: &str) -> Result<Result<SwitchState, SwitchError>> {
        let mode = StartupMode::ManualSwitchover;
        let me = self.me().to_owned();
        let refusal = |ji: &Instance| {
            SwitchError::Refused(format!(
                "[{}][{}]{MSG_SWITCH_TO_API_SERVER}",
                mode.name(),
                ji.display_name()
            ))
        };
        let Some(row) = self.get_cluster().await? else {
            return Ok(Err(SwitchError::Refused("db cluster not found".to_owned())));
        };
        if row.member_id == me {
            if new == me {
                return Ok(Ok(SwitchState::AlreadyStarted));
            }
            let target = self.get_instance(new).await?;
            let Some(target) = target else {
                // JC only logs this; the error answer is commented out.
                tracing::info!(
                    "[{}][switch][skip][newMemberId={new}]JocInstance not found",
                    mode.name()
                );
                return Ok(Ok(SwitchState::SwitchMember));
            };
            if target.api_server {
                return Ok(Err(refusal(&target)));
            }
            if self.exceeded(target.heart_beat + target.age_s, Some(target.heart_beat)) {
                tracing::info!(
                    "[{}][switch][skip][newMemberId={new}][db][UTC]heartBeat={} exceeded",
                    mode.name(),
                    target.heart_beat
                );
                return Ok(Ok(SwitchState::SwitchMember));
            }
            if self.services.is_active() {
                // First write: SWITCH_HEART_BEAT = now on the row as read (read
                // by ControllerResourceModifyClusterImpl.isSwitchingJocInstances).
                self.update_cluster(
                    &row.member_id,
                    Ts::Epoch(Some(row.heart_beat)),
                    row.switch_member_id.as_deref(),
                    Ts::Now,
                    &row,
                )
                .await?;
                self.amh.perform(mode, false).await;
            }
            self.update_cluster(new, Ts::Now, Some(new), Ts::Now, &row)
                .await?;
            tracing::info!("[{}][switch][end]newMemberId={new}", mode.name());
            return Ok(Ok(SwitchState::SwitchMember));
        }
        if row.member_id == new {
            return Ok(Ok(SwitchState::AlreadyStarted));
        }
        if row.switch_member_id.as_deref() == Some(new) {
            return Ok(Ok(SwitchState::SwitchMember));
        }
        let mut answer = Ok(SwitchState::SwitchMember);
        let mut skip = false;
        if new == me {
            skip = self.config.api_server();
        } else {
            match self.get_instance(new).await? {
                None => {
                    skip = true;
                    tracing::info!(
                        "[{}][switch][skip][setSwitchMember][newMemberId={new}]not found",
                        mode.name()
                    );
                }
                Some(target) if target.api_server => {
                    skip = true;
                    answer = Err(refusal(&target));
                }
                Some(target) => {
                    if self.exceeded(target.heart_beat + target.age_s, Some(target.heart_beat)) {
                        skip = true;
                        tracing::info!(
                            "[{}][switch][skip][setSwitchMember][newMemberId={new}][db][UTC]heartBeat={} exceeded",
                            mode.name(),
                            target.heart_beat
                        );
                    }
                }
            }
        }
        if !skip {
            // Not active: ask the active to hand over at its next poll. The
            // whole row is rewritten, HEART_BEAT = now too (docs/joc-facts.md fact 17).
            self.update_cluster(&row.member_id, Ts::Now, Some(new), Ts::Now, &row)
                .await?;
            tracing::info!(
                "[{}][switch][end][setSwitchMember]newMemberId={new}[active={}]",
                mode.name(),
                row.member_id
            );
        }
        Ok(answer)
    }

    /// Clean shutdown (JSC `destroy` → `JocClusterService.stop(automatic,
    /// deleteActiveCurrentMember = true, resetCurrentInstanceHeartBeat = true)`
    /// → JC `close`, docs/joc-facts.md fact 12): stop the services, delete the row if it is
    /// this member's and no switch is pending, and reset the instance
    /// heartbeat to 1970-01-01. `closed` must already be true. Returns the
    /// rows deleted.
    pub async fn shutdown(&mut self) -> Result<u64> {
        if self.services.is_active() {
            self.amh.perform(StartupMode::Automatic, false).await;
        }
        if !self.instance_processed {
            return Ok(0);
        }
        let deleted = self.try_delete_active_current_member().await;
        let reset = self.try_reset_current_instance_heart_beat().await;
        let deleted = deleted?;
        reset?;
        Ok(deleted)
    }

    /// Whether this member's services run.
    pub fn services_active(&self) -> bool {
        self.services.is_active()
    }
}

/// JI `getOS`: the INV_OPERATING_SYSTEMS row of `hostname`, inserted if
/// missing (NAME, ARCHITECTURE, DISTRIBUTION from the JVM's `os.*`
/// properties; here the kernel's).
async fn os_id(conn: &mut AnyConnection, d: Dialect, hostname: &str) -> Result<i64> {
    let select = sql(
        d,
        &format!(
            r#"SELECT {} FROM INV_OPERATING_SYSTEMS WHERE "HOSTNAME" = ?"#,
            int(d, "\"ID\"")
        ),
    );
    let found: Option<i64> = sqlx::query_scalar(AssertSqlSafe(select.clone()))
        .bind(hostname)
        .fetch_optional(&mut *conn)
        .await
        .context("reading INV_OPERATING_SYSTEMS")?;
    if let Some(id) = found {
        return Ok(id);
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let q = sql(
        d,
        &format!(
            r#"INSERT INTO INV_OPERATING_SYSTEMS ("HOSTNAME", "NAME", "ARCHITECTURE", "DISTRIBUTION", "MODIFIED") VALUES (?, 'Linux', ?, ?, {})"#,
            now_utc(d)
        ),
    );
    sqlx::query(AssertSqlSafe(q))
        .bind(hostname)
        .bind(std::env::consts::ARCH)
        .bind(truncate(&release, 255))
        .execute(&mut *conn)
        .await
        .context("inserting the INV_OPERATING_SYSTEMS row")?;
    sqlx::query_scalar(AssertSqlSafe(select))
        .bind(hostname)
        .fetch_one(&mut *conn)
        .await
        .context("reading INV_OPERATING_SYSTEMS")
}

/// The stand-in's data directory default: the current directory (`user.dir`).
pub fn default_data_dir() -> Result<PathBuf> {
    std::env::current_dir().context("reading the current directory")
}

/// Polling intervals as Durations.
pub fn polling(props: &JocProperties) -> (Duration, Duration) {
    (
        Duration::from_secs(props.polling_interval_s),
        Duration::from_secs(props.polling_wait_interval_on_error_s),
    )
}
