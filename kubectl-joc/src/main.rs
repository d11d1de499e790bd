//! `kubectl joc`: day-2 commands for joc-ha's JocClusters, talking only to
//! the Kubernetes API (what `kubectl cnpg` is to CloudNativePG). Installed
//! on the PATH as `kubectl-joc` (`make plugin`), kubectl runs it as
//! `kubectl joc …`.

mod error;
mod fence;
mod restart;
mod status;
mod switchover;

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory as _, Parser, Subcommand};
use joc_ha_crds::JocCluster;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

use error::PluginError;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl joc",
    bin_name = "kubectl joc",
    about = "Status, switch-over, restart and fencing of joc-ha JocClusters",
    long_about = "Status, switch-over, restart and fencing of joc-ha JocClusters.\n\nTalks only to the Kubernetes API, with kubectl's configuration (KUBECONFIG, the current context and its namespace).",
    version
)]
struct Cli {
    /// The namespace (default: the context's, else "default").
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// The kubeconfig context to use (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every member with its role, lease term, readiness and failsafe mark,
    /// and in js7 mode JOC's own view; the conditions, the last switch-over
    /// and the latest Events.
    #[command(
        after_help = "JOC ACTIVE and JOC HEARTBEAT (js7 mode; \"—\" in generic mode): what each member's sidecar\nsaw at its last look at JOC's tables, as it publishes it on its pod (annotation joc-ha.dev/joc-view,\nrefreshed when JOC's active member changes, else at most every 30 s). JOC ACTIVE is JOC's own\nactive member (JOC_CLUSTER.MEMBER_ID; \"none\": no JOC instance is active). JOC HEARTBEAT is the\nage of the row's own member's JOC_INSTANCES heartbeat at the look, by the database's clock, then how\nlong ago the look was, by this machine's clock: \"2s (10s ago)\". -o json carries the same per\nmember under \"joc\" (ages at the look, lookedAt, lookedSecondsAgo).\n\nExamples:\n  kubectl joc status joc -n js7\n  kubectl joc status joc -o json"
    )]
    Status {
        /// The JocCluster.
        cluster: String,
        /// `text` or `json`.
        #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
    /// Moves the active member: writes the `joc-ha.dev/switchover-to`
    /// annotation; with --wait, waits for the outcome. Exit code: 0
    /// completed (or requested, without --wait), 2 rejected, 3 no outcome in
    /// time, 1 any other error.
    #[command(
        after_help = "Examples:\n  kubectl joc switchover joc --to joc-1 --wait\n  kubectl joc switchover joc --wait        # the best ready standby"
    )]
    Switchover {
        /// The JocCluster.
        cluster: String,
        /// A member pod, or `any` for the best ready standby.
        #[arg(long, default_value = "any")]
        to: String,
        /// Wait until a sidecar records the outcome.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, e.g. 30s, 2m.
        #[arg(long, default_value = "60s", value_parser = parse_timeout)]
        timeout: Duration,
    },
    /// Restarts every pod of the cluster without losing the active member:
    /// stamps the pod templates (as `kubectl rollout restart` does) and the
    /// operator replaces the standbys first, then switches over and
    /// replaces the old active member. With --wait, waits until every pod
    /// is new and Ready and one member is active. Exit code: 0 done (or
    /// requested, without --wait), 3 not done in time, 1 any other error.
    #[command(after_help = "Example:\n  kubectl joc restart joc --wait --timeout 10m")]
    Restart {
        /// The JocCluster.
        cluster: String,
        /// Wait until the restart is done.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, e.g. 5m.
        #[arg(long, default_value = "10m", value_parser = parse_timeout)]
        timeout: Duration,
    },
    /// Fences a member: it gives up the lease (the active member hands it to
    /// the best ready standby first) and neither takes nor receives it until
    /// unfenced; its JOC keeps running as a standby. Refused for the active
    /// member while no other member is Ready. Exit code: 0 fenced (or
    /// requested, without --wait), 3 not acted on in time, 1 any other error.
    #[command(
        after_help = "Writes the JocCluster annotation joc-ha.dev/fenced-members (a JSON array of pod names),
which outlives the pod.

Examples:
  kubectl joc fence joc-1 -n js7
  kubectl joc fence joc-0 --wait        # the active member: waits until another member is active"
    )]
    Fence {
        /// The member pod.
        pod: String,
        /// Wait until its sidecar has acted (and, for the active member,
        /// another member carries the active label).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, e.g. 30s.
        #[arg(long, default_value = "60s", value_parser = parse_timeout)]
        timeout: Duration,
    },
    /// Unfences a member: it takes part in the lease again.
    #[command(after_help = "Example:\n  kubectl joc unfence joc-1 --wait")]
    Unfence {
        /// The member pod.
        pod: String,
        /// Wait until its sidecar has acted.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, e.g. 30s.
        #[arg(long, default_value = "60s", value_parser = parse_timeout)]
        timeout: Duration,
    },
    /// Prints a shell completion script (bash, zsh, fish, …).
    #[command(
        after_help = "Example:\n  kubectl joc completion bash > /etc/bash_completion.d/kubectl_joc"
    )]
    Completion { shell: clap_complete::Shell },
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    joc_ha_crds::v1alpha1::parse_duration(text)
        .map_err(|e| format!("{e}; write it like 30s, 1m30s or 1500ms"))
}

async fn client(context: Option<&str>) -> Result<(kube::Client, String), PluginError> {
    let config = match context {
        None => kube::Config::infer()
            .await
            .map_err(|e| PluginError::Config(e.to_string()))?,
        Some(context) => {
            let kubeconfig = Kubeconfig::read().map_err(|e| PluginError::Config(e.to_string()))?;
            let options = KubeConfigOptions {
                context: Some(context.to_owned()),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| PluginError::Config(e.to_string()))?
        }
    };
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config).map_err(|e| PluginError::Config(e.to_string()))?;
    Ok((client, namespace))
}

async fn run(cli: Cli) -> Result<String, PluginError> {
    if let Command::Completion { shell } = cli.command {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "kubectl-joc", &mut out);
        return Ok(String::from_utf8_lossy(&out).into_owned());
    }
    let (client, context_namespace) = client(cli.context.as_deref()).await?;
    let namespace = cli.namespace.unwrap_or(context_namespace);
    match cli.command {
        Command::Status { cluster, output } => {
            let view = status::gather(&client, &namespace, &cluster).await?;
            if output == "json" {
                serde_json::to_string_pretty(&view).map_err(|e| PluginError::Api(e.to_string()))
            } else {
                Ok(status::render(&view))
            }
        }
        Command::Switchover {
            cluster,
            to,
            wait,
            timeout,
        } => {
            let api: Api<JocCluster> = Api::namespaced(client, &namespace);
            switchover::run(&api, &namespace, &cluster, &to, wait.then_some(timeout)).await
        }
        Command::Restart {
            cluster,
            wait,
            timeout,
        } => restart::run(&client, &namespace, &cluster, wait.then_some(timeout)).await,
        Command::Fence { pod, wait, timeout } => {
            fence::run(&client, &namespace, &pod, true, wait.then_some(timeout)).await
        }
        Command::Unfence { pod, wait, timeout } => {
            fence::run(&client, &namespace, &pod, false, wait.then_some(timeout)).await
        }
        Command::Completion { .. } => Ok(String::new()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn timeouts_read_like_the_crds_durations() {
        assert_eq!(parse_timeout("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_timeout("soon").is_err_and(|e| e.contains("like 30s")));
    }
}
