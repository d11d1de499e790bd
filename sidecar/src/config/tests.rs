use clap::Parser;

use super::*;

fn flags(args: &[&str]) -> Flags {
    let mut all = vec![
        "joc-ha-sidecar",
        "--pod-name",
        "joc-0",
        "--namespace",
        "js7",
        "--cluster",
        "joc",
    ];
    all.extend_from_slice(args);
    Flags::try_parse_from(all).expect("flags parse")
}

#[test]
fn claim_identity_is_namespace_slash_cluster_and_names_a_missing_setting() {
    let parse = |args: &[&str]| {
        let mut all = vec!["joc-ha-sidecar"];
        all.extend_from_slice(args);
        claim_identity(&Flags::try_parse_from(all).expect("flags parse"))
    };
    // (flags, Ok((cluster id, member)) or Err(the setting named))
    type Case<'a> = (&'a [&'a str], Result<(&'a str, &'a str), &'a str>);
    let cases: [Case; 4] = [
        (
            &[
                "--pod-name",
                "joc-0",
                "--namespace",
                "js7",
                "--cluster",
                "joc",
            ],
            Ok(("js7/joc", "joc-0")),
        ),
        (
            &["--pod-name", "joc-0", "--cluster", "joc"],
            Err("JOC_HA_NAMESPACE"),
        ),
        (
            &[
                "--pod-name",
                "joc-0",
                "--namespace",
                "js7",
                "--cluster",
                " ",
            ],
            Err("JOC_HA_CLUSTER"),
        ),
        (
            &["--namespace", "js7", "--cluster", "joc"],
            Err("JOC_HA_POD_NAME"),
        ),
    ];
    for (args, want) in cases {
        match (parse(args), want) {
            (Ok((cluster, member)), Ok((want_cluster, want_member))) => {
                assert_eq!(
                    (cluster.as_str(), member.as_str()),
                    (want_cluster, want_member)
                );
            }
            (Err(error), Err(setting)) => {
                let text = error.to_string();
                assert!(
                    text.contains(setting) && text.contains("--claim-database"),
                    "{text}"
                );
            }
            (got, want) => panic!("{args:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn composes_a_url_from_secret_parts_with_encoded_password() {
    let config = Config::from_flags(flags(&[
        "--database-type",
        "postgresql",
        "--database-host",
        "db",
        "--database-name",
        "joc",
        "--database-user",
        "joc",
        "--database-password",
        "p@ss:w/rd",
    ]))
    .expect("valid");
    assert_eq!(
        config.database_url,
        "postgres://joc:p%40ss%3Aw%2Frd@db:5432/joc"
    );
    assert_eq!(
        config.redacted_database_url(),
        "postgres://joc:***@db:5432/joc"
    );
    assert!(
        !format!("{config:?}").contains("p%40ss"),
        "Debug never shows the password"
    );
}

#[test]
fn mariadb_urls_become_mysql_urls() {
    let config = Config::from_flags(flags(&["--database-url", "mariadb://u:secret@db:3306/joc"]))
        .expect("valid");
    assert_eq!(config.database_kind, DatabaseKind::Mariadb);
    assert!(config.database_url.starts_with("mysql://"));
}

#[test]
fn each_bad_setting_is_named_and_never_shows_the_password() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--database-url", "http://u:secret@db/x"],
            "JOC_HA_DATABASE_URL",
        ),
        (&["--database-type", "oracle"], "JOC_HA_DATABASE_TYPE"),
        (&[], "JOC_HA_DATABASE_URL"),
        (&["--database-type", "postgresql"], "JOC_HA_DATABASE_HOST"),
        (
            &[
                "--database-url",
                "postgres://u:secret@db/x",
                "--renew-interval",
                "2s",
            ],
            "JOC_HA_RENEW_INTERVAL",
        ),
        (
            &[
                "--database-url",
                "postgres://u:secret@db/x",
                "--lease-ttl",
                "five",
            ],
            "JOC_HA_LEASE_TTL",
        ),
        (
            &[
                "--database-url",
                "postgres://u:secret@db/x",
                "--http-addr",
                "nowhere",
            ],
            "JOC_HA_HTTP_ADDR",
        ),
        (
            &[
                "--database-url",
                "postgres://u:secret@db/x",
                "--local-addr",
                "0.0.0.0:9087",
            ],
            "JOC_HA_LOCAL_ADDR",
        ),
        (
            &[
                "--database-url",
                "postgres://u:secret@db/x",
                "--local-addr",
                "10.1.2.3:9087",
            ],
            "JOC_HA_LOCAL_ADDR",
        ),
        (
            &[
                "--database-url",
                "postgres://u:secret@db/x",
                "--local-addr",
                "localhost",
            ],
            "JOC_HA_LOCAL_ADDR",
        ),
        (
            &[
                "--database-url",
                "postgres://u:secret@db/x",
                "--database-tls-mode",
                "maybe",
            ],
            "JOC_HA_DATABASE_TLS_MODE",
        ),
    ];
    for (args, setting) in cases {
        let error = Config::from_flags(flags(args)).expect_err("refused");
        let text = error.to_string();
        assert!(text.contains(setting), "{text:?} should name {setting}");
        assert!(!text.contains("secret"), "{text:?} shows the password");
    }
    let missing_pod =
        Flags::try_parse_from(["joc-ha-sidecar", "--database-url", "sqlite:///tmp/x"])
            .expect("parse");
    let error = Config::from_flags(missing_pod).expect_err("refused");
    assert!(error.to_string().contains("JOC_HA_POD_NAME"));
}

#[test]
fn tls_mode_maps_to_each_driver() {
    let pg = Config::from_flags(flags(&[
        "--database-url",
        "postgres://u:p@db/x",
        "--database-tls-mode",
        "verify-full",
    ]))
    .expect("valid");
    assert!(pg.database_url.ends_with("?sslmode=verify-full"));
    let my = Config::from_flags(flags(&[
        "--database-url",
        "mysql://u:p@db/x",
        "--database-tls-mode",
        "require",
    ]))
    .expect("valid");
    assert!(my.database_url.ends_with("?ssl-mode=REQUIRED"));
}

#[test]
fn mysql_query_credentials_move_into_the_user_info() {
    let config = Config::from_flags(flags(&[
        "--database-url",
        "mariadb://db:3306/joc?user=joc&password=p%40ss&ssl-mode=REQUIRED",
    ]))
    .expect("valid");
    assert_eq!(
        config.database_url,
        "mysql://joc:p%40ss@db:3306/joc?ssl-mode=REQUIRED"
    );
    let error = Config::from_flags(flags(&[
        "--database-url",
        "mysql://u:secret@db/joc?password=other",
    ]))
    .expect_err("ambiguous");
    assert!(error.to_string().contains("keep one"), "{error}");
    assert!(!error.to_string().contains("secret"), "{error}");
    // PostgreSQL's driver reads the query form itself: left as written.
    let pg = Config::from_flags(flags(&[
        "--database-url",
        "postgres://db/joc?user=joc&password=pw",
    ]))
    .expect("valid");
    assert_eq!(pg.database_url, "postgres://db/joc?user=joc&password=pw");
    for url in [&config.database_url, &pg.database_url] {
        crate::lease::DatabaseUrl::parse(url).expect("the lease reads it");
    }
}

#[test]
fn the_ca_file_is_named_in_each_drivers_words() {
    let ca = "/etc/joc-ha/database-ca/ca.crt";
    let pg = Config::from_flags(flags(&[
        "--database-url",
        "postgres://u:p@db/x",
        "--database-tls-mode",
        "verify-ca",
        "--database-ca-file",
        ca,
    ]))
    .expect("valid");
    assert!(
        pg.database_url
            .ends_with("?sslmode=verify-ca&sslrootcert=/etc/joc-ha/database-ca/ca.crt"),
        "{}",
        pg.database_url
    );
    let my = Config::from_flags(flags(&[
        "--database-url",
        "mysql://u:p@db/x",
        "--database-ca-file",
        ca,
    ]))
    .expect("valid");
    assert!(
        my.database_url
            .ends_with("?ssl-ca=/etc/joc-ha/database-ca/ca.crt")
    );
}

#[test]
fn redaction_keeps_everything_but_the_password() {
    assert_eq!(
        redact_url("mysql://joc:pw@db:3306/joc?x=1"),
        "mysql://joc:***@db:3306/joc?x=1"
    );
    assert_eq!(redact_url("postgres://db/joc"), "postgres://db/joc");
    assert_eq!(
        redact_url("sqlite:///tmp/lease.db"),
        "sqlite:///tmp/lease.db"
    );
    assert_eq!(redact_url("postgres://a:b@c@db/x"), "postgres://a:***@db/x");
}

#[test]
fn the_local_listener_accepts_only_loopback_addresses() {
    let cases: &[(&str, bool)] = &[
        ("127.0.0.1:9087", true),
        ("127.0.0.2:1", true),
        ("[::1]:9087", true),
        ("0.0.0.0:9087", false),
        ("[::]:9087", false),
        ("192.168.1.5:9087", false),
        ("9087", false),
    ];
    for (text, accepted) in cases {
        assert_eq!(super::parse_local_addr(text).is_ok(), *accepted, "{text:?}");
    }
}
