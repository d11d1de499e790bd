//! JOC's member id of an instance.

use sha2::{Digest, Sha256};

/// `<hostname>:<lowercase hex SHA-256 of the data directory path>`, as JOC
/// computes it: `JocConfiguration` keeps `Paths.get(user.dir)` and joins the
/// host name (env `HOSTNAME`, else the resolved local host name) with
/// `SOSString.hash256` of that path's `toString()` (SOS's `sos-components`,
/// `sos-joc/sos-joc-cluster/.../configuration/JocConfiguration.java`,
/// `sos-commons/.../SOSString.java`; docs/joc-facts.md 6). So the path is hashed
/// as Java prints it, see [`java_path_string`]. In a StatefulSet pod the
/// host name is the pod name, so a member keeps its id across restarts.
pub fn member_id(hostname: &str, data_directory: &str) -> String {
    let digest = Sha256::digest(java_path_string(data_directory).as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    format!("{hostname}:{hex}")
}

/// What `Paths.get(path).toString()` gives on Unix (OpenJDK's `UnixPath`
/// normalises the text when the path is made): a run of `/` becomes one,
/// and a trailing `/` goes unless the path is the root. Nothing else
/// changes: `.` and `..` stay (Java resolves them only in `normalize()`,
/// which JOC does not call), and so do symbolic links. `user.dir` itself
/// comes from the JVM's working directory, which the kernel reports with
/// links resolved: the configured data directory must be that physical path.
pub fn java_path_string(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    out
}

/// The host name part of a member id (the pod name of a member).
pub fn hostname_of(member_id: &str) -> &str {
    member_id
        .rsplit_once(':')
        .map_or(member_id, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `printf '%s' /var/sos-berlin.com/js7/joc | sha256sum`
    const JOC_DIR_SHA256: &str = "97c88ccc3975703ebd0b7277d394ec8768f88b31775e8df038572d2547c240a0";

    #[test]
    fn member_id_is_host_and_sha256_hex_of_the_data_directory() {
        // sha256("abc") is the FIPS 180-2 test vector.
        assert_eq!(
            member_id("joc-0", "abc"),
            "joc-0:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let id = member_id("joc-1", "/var/sos-berlin.com/js7/joc");
        assert_eq!(id, format!("joc-1:{JOC_DIR_SHA256}"));
        assert_eq!(hostname_of(&id), "joc-1");
        assert_eq!(hostname_of("no-colon"), "no-colon");
    }

    #[test]
    fn the_path_is_hashed_as_java_prints_it() {
        // (as configured, as Paths.get(..).toString() prints it)
        let cases = [
            ("/var/sos-berlin.com/js7/joc", "/var/sos-berlin.com/js7/joc"),
            (
                "/var/sos-berlin.com/js7/joc/",
                "/var/sos-berlin.com/js7/joc",
            ),
            (
                "/var/sos-berlin.com//js7///joc//",
                "/var/sos-berlin.com/js7/joc",
            ),
            (
                "//var/sos-berlin.com/js7/joc",
                "/var/sos-berlin.com/js7/joc",
            ),
            ("/", "/"),
            ("///", "/"),
            ("", ""),
            // Java keeps `.` and `..`: only normalize() would resolve them.
            ("/var/./js7/../joc", "/var/./js7/../joc"),
            (
                "/var/sos-berlin.com/js7/joc/.",
                "/var/sos-berlin.com/js7/joc/.",
            ),
            ("relative/dir/", "relative/dir"),
        ];
        for (configured, java) in cases {
            assert_eq!(java_path_string(configured), java, "{configured:?}");
        }
        for spelled in [
            "/var/sos-berlin.com/js7/joc/",
            "/var//sos-berlin.com/js7/joc",
        ] {
            assert_eq!(
                member_id("joc-0", spelled),
                format!("joc-0:{JOC_DIR_SHA256}"),
                "{spelled:?}"
            );
        }
        assert_ne!(
            member_id("joc-0", "/var/sos-berlin.com/js7/./joc"),
            format!("joc-0:{JOC_DIR_SHA256}"),
            "`.` is not resolved, as in Java"
        );
    }
}
