//! The cockpit's preStop hook: an `exec` of the sidecar's own executable,
//! copied by an init container into an in-memory volume.

use super::*;

#[test]
fn members_stop_through_an_exec_hook_that_runs_the_sidecars_copy() {
    for mode in ["js7", "generic"] {
        let pod = build_pod(
            serde_json::json!({"workload": {"mode": mode}}),
            Component::Member,
        );
        let cockpit = container(&pod, pod::COCKPIT_CONTAINER).expect("cockpit");
        let hook = cockpit
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .expect("preStop");
        // The sidecar's /prestop is on loopback only: no httpGet hook.
        assert!(hook.http_get.is_none(), "{mode}");
        let command = hook
            .exec
            .as_ref()
            .and_then(|e| e.command.clone())
            .expect("exec");
        assert_eq!(
            command,
            ["/var/run/joc-ha-bin/joc-ha-sidecar", "prestop"],
            "{mode}"
        );
        let in_cockpit = mount(cockpit, pod::HOOK_BIN_VOLUME).expect("cockpit mount");
        assert_eq!(in_cockpit.mount_path, pod::HOOK_BIN_DIR);
        assert_eq!(in_cockpit.read_only, Some(true), "{mode}");

        let install = container(&pod, pod::HOOK_INIT_CONTAINER).expect("install");
        assert_eq!(install.image.as_deref(), Some("joc-ha-sidecar:test"));
        assert_eq!(
            install.args.as_deref().unwrap_or_default(),
            ["install-hook", "--dir", pod::HOOK_BIN_DIR]
        );
        assert_eq!(install.restart_policy, None, "runs to completion");
        let written = mount(install, pod::HOOK_BIN_VOLUME).expect("install mount");
        assert_eq!(written.mount_path, pod::HOOK_BIN_DIR);
        assert_ne!(written.read_only, Some(true));
        let security = install.security_context.as_ref().expect("security");
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.run_as_non_root, Some(true));

        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == pod::HOOK_BIN_VOLUME)
            .and_then(|v| v.empty_dir.as_ref())
            .expect("emptyDir");
        assert_eq!(volume.medium.as_deref(), Some("Memory"));
        assert_eq!(
            volume.size_limit.as_ref().map(|q| q.0.as_str()),
            Some("32Mi")
        );

        // The sidecar serves /prestop where the hook calls by default.
        let sidecar = container(&pod, pod::SIDECAR_CONTAINER).expect("sidecar");
        assert_eq!(
            env(sidecar, sidecar_env::LOCAL_ADDR).and_then(|e| e.value.as_deref()),
            Some("127.0.0.1:9087")
        );
        assert_eq!(
            env(sidecar, sidecar_env::HTTP_ADDR).and_then(|e| e.value.as_deref()),
            Some("0.0.0.0:9086")
        );
        // Only the pod port is declared: the loopback one is no pod port.
        let ports: Vec<i32> = sidecar
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .collect();
        assert_eq!(ports, [pod::SIDECAR_PORT]);
    }
}

#[test]
fn api_servers_have_no_hook_and_no_copy() {
    let pod = build_pod(serde_json::json!({}), Component::ApiServer);
    let cockpit = container(&pod, pod::COCKPIT_CONTAINER).expect("cockpit");
    assert!(cockpit.lifecycle.is_none());
    assert!(container(&pod, pod::HOOK_INIT_CONTAINER).is_none());
    assert!(
        pod.volumes
            .iter()
            .flatten()
            .all(|v| v.name != pod::HOOK_BIN_VOLUME)
    );
}
