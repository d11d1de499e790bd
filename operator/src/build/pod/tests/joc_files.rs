//! js7: the init containers that prepare JOC's files.

use super::*;

#[test]
fn the_image_files_layout_of_the_contract() {
    for component in [Component::Member, Component::ApiServer] {
        let pod = build_pod(serde_json::json!({}), component);
        for name in [pod::RESOURCES_VOLUME, pod::CLASSES_VOLUME] {
            let volume = pod
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == name)
                .unwrap_or_else(|| panic!("volume {name}"));
            let medium = volume.empty_dir.as_ref().and_then(|e| e.medium.as_deref());
            assert_eq!(medium, Some("Memory"), "{name}");
        }
        let cockpit = container(&pod, pod::COCKPIT_CONTAINER).expect("cockpit");
        let resources = mount(cockpit, pod::RESOURCES_VOLUME).expect("resources mount");
        assert_eq!(
            resources.mount_path,
            "/var/sos-berlin.com/js7/joc/resources/joc"
        );
        assert_ne!(
            resources.read_only,
            Some(true),
            "the entrypoint appends to joc.properties"
        );
        assert_eq!(resources.sub_path, None);
        let classes = mount(cockpit, pod::CLASSES_VOLUME).expect("classes mount");
        assert_eq!(
            classes.mount_path,
            "/var/sos-berlin.com/js7/joc/webapps/joc/WEB-INF/classes/joc-settings.properties"
        );
        assert_eq!(classes.sub_path.as_deref(), Some("joc-settings.properties"));

        let files = container(&pod, pod::JOC_IMAGE_FILES_INIT_CONTAINER).expect("image files");
        assert_eq!(files.image, cockpit.image, "runs the cockpit image itself");
        let command = files.command.clone().unwrap_or_default();
        assert_eq!(command[..2], ["sh".to_owned(), "-c".to_owned()]);
        assert!(
            command[2].contains(
                "cp -R '/var/sos-berlin.com/js7/joc/resources/joc'/. /joc-ha/image/resources/"
            ),
            "{}",
            command[2]
        );
        assert!(command[2].contains("'/var/sos-berlin.com/js7/joc/webapps/joc/WEB-INF/classes/joc-settings.properties' /joc-ha/image/classes/"), "{}", command[2]);
        let config = container(&pod, pod::JOC_CONFIG_INIT_CONTAINER).expect("joc-config");
        assert_eq!(config.image.as_deref(), Some("joc-ha-sidecar:test"));
        for c in [files, config] {
            assert_eq!(
                mount(c, pod::RESOURCES_VOLUME).map(|m| m.mount_path.as_str()),
                Some(pod::IMAGE_RESOURCES_DIR)
            );
            assert_eq!(
                mount(c, pod::CLASSES_VOLUME).map(|m| m.mount_path.as_str()),
                Some(pod::IMAGE_CLASSES_DIR)
            );
            let security = c.security_context.as_ref().expect("security");
            assert_eq!(security.run_as_user, Some(JOC_USER_ID));
        }
        let pod_name = env(config, sidecar_env::POD_NAME)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(
            pod_name,
            Some("metadata.name"),
            "the ordering comes from the pod name"
        );
        let order: Vec<&str> = pod
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        // Members: the sidecar runs first, so that it reports a
        // refused database while `joc-config` keeps JOC from starting.
        let want: &[&str] = match component {
            Component::Member => &[
                pod::SIDECAR_CONTAINER,
                pod::HOOK_INIT_CONTAINER,
                pod::JOC_IMAGE_FILES_INIT_CONTAINER,
                pod::JOC_CONFIG_INIT_CONTAINER,
            ],
            Component::ApiServer => &[
                pod::JOC_IMAGE_FILES_INIT_CONTAINER,
                pod::JOC_CONFIG_INIT_CONTAINER,
            ],
        };
        assert_eq!(order, want, "{component:?}");
        // JOC starts only on a database this cluster owns: joc-config
        // claims it as `<namespace>/<name>`, like the lease.
        let args = config.args.as_deref().unwrap_or_default();
        assert!(args.iter().any(|a| a == "--claim-database"), "{args:?}");
        let namespace = env(config, sidecar_env::NAMESPACE)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(namespace, Some("metadata.namespace"));
        assert_eq!(
            env(config, sidecar_env::CLUSTER).and_then(|e| e.value.as_deref()),
            Some("joc")
        );
    }
    // A data directory is quoted for the shell and followed everywhere.
    let pod = build_pod(
        serde_json::json!({"workload": {"jocDataDirectory": "/opt/it's/joc/"}}),
        Component::Member,
    );
    let cockpit = container(&pod, pod::COCKPIT_CONTAINER).expect("cockpit");
    assert_eq!(
        mount(cockpit, pod::RESOURCES_VOLUME).map(|m| m.mount_path.as_str()),
        Some("/opt/it's/joc/resources/joc")
    );
    let files = container(&pod, pod::JOC_IMAGE_FILES_INIT_CONTAINER).expect("image files");
    assert!(
        files.command.clone().unwrap_or_default()[2]
            .contains("cp -R '/opt/it'\\''s/joc/resources/joc'/.")
    );
}

#[test]
fn joc_config_arguments_follow_the_spec() {
    // (spec, component, flag, expected value after it; None = flag absent)
    let cases: Vec<(serde_json::Value, Component, &str, Option<&str>)> = vec![
        (
            serde_json::json!({}),
            Component::Member,
            "--ordering-offset",
            Some("0"),
        ),
        (
            serde_json::json!({}),
            Component::ApiServer,
            "--ordering-offset",
            Some("50"),
        ),
        (
            serde_json::json!({}),
            Component::Member,
            "--security-level",
            None,
        ),
        (
            serde_json::json!({"securityLevel": "high"}),
            Component::Member,
            "--security-level",
            Some("high"),
        ),
        (
            serde_json::json!({}),
            Component::Member,
            "--license-dir",
            None,
        ),
        (
            serde_json::json!({"license": {"secretRef": {"name": "lic"}}}),
            Component::Member,
            "--license-dir",
            Some(pod::LICENSE_DIR),
        ),
        (
            serde_json::json!({"license": {"secretRef": {"name": "lic"}}}),
            Component::ApiServer,
            "--license-dir",
            Some(pod::LICENSE_DIR),
        ),
        (
            serde_json::json!({"config": {"configMapName": "mine"}}),
            Component::Member,
            "--user-config-dir",
            Some(pod::USER_CONFIG_DIR),
        ),
        (
            serde_json::json!({}),
            Component::Member,
            "--out-dir",
            Some(pod::IMAGE_RESOURCES_DIR),
        ),
        (
            serde_json::json!({}),
            Component::Member,
            "--classes-dir",
            Some(pod::IMAGE_CLASSES_DIR),
        ),
    ];
    for (spec, component, flag, want) in cases {
        let pod = build_pod(spec.clone(), component);
        let config = container(&pod, pod::JOC_CONFIG_INIT_CONTAINER).expect("joc-config");
        assert_eq!(arg_after(config, flag), want, "{spec} {component:?} {flag}");
    }
    // joc.properties keys: (spec, component, expected --property values)
    let cases: Vec<(serde_json::Value, Component, Vec<&str>)> = vec![
        (
            serde_json::json!({}),
            Component::Member,
            vec![
                "cluster_id=joc",
                "cluster_polling_interval=1",
                "cluster_heart_beat_exceeded_interval=5",
                "create_db_tables=true",
            ],
        ),
        (
            serde_json::json!({}),
            Component::ApiServer,
            vec![
                "cluster_id=api",
                "cluster_polling_interval=1",
                "cluster_heart_beat_exceeded_interval=5",
                "create_db_tables=true",
            ],
        ),
        (
            serde_json::json!({"database": {"type": "postgresql", "secretRef": {"name": "db"}, "createTables": false}, "workload": {"jocCluster": {"pollingInterval": "30s", "heartBeatExceededInterval": "1m"}}}),
            Component::Member,
            vec![
                "cluster_id=joc",
                "cluster_polling_interval=30",
                "cluster_heart_beat_exceeded_interval=60",
                "create_db_tables=false",
            ],
        ),
    ];
    for (spec, component, want) in cases {
        let pod = build_pod(spec.clone(), component);
        let config = container(&pod, pod::JOC_CONFIG_INIT_CONTAINER).expect("joc-config");
        let args = config.args.clone().unwrap_or_default();
        let got: Vec<&str> = args
            .windows(2)
            .filter(|w| w[0] == "--property")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(got, want, "{spec}");
        assert_eq!(
            args.iter().any(|a| a == "--api-server"),
            component == Component::ApiServer
        );
    }
    // The license Secret is a volume of the init container only.
    let pod = build_pod(
        serde_json::json!({"license": {"secretRef": {"name": "lic"}}}),
        Component::Member,
    );
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == pod::LICENSE_VOLUME)
        .expect("license volume");
    assert_eq!(
        volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref()),
        Some("lic")
    );
    let users: Vec<&str> = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .filter(|c| mount(c, pod::LICENSE_VOLUME).is_some())
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(users, [pod::JOC_CONFIG_INIT_CONTAINER]);
}
