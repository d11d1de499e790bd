//! JOC's member id of an instance.

use sha2::{Digest, Sha256};

/// `<hostname>:<lowercase hex SHA-256 of the data directory path>`, as JOC
/// computes it: `JocConfiguration` joins the host name (env `HOSTNAME`, else
/// the resolved local host name) and `SOSString.hash256(dataDirectory)` of
/// `System.getProperty("user.dir")` (SOS's `sos-components`,
/// `sos-joc/sos-joc-cluster/.../JocConfiguration.java`,
/// `sos-commons/.../SOSString.java`). In a StatefulSet pod the host name is
/// the pod name, so a member keeps its id across restarts.
pub fn member_id(hostname: &str, data_directory: &str) -> String {
    let digest = Sha256::digest(data_directory.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    format!("{hostname}:{hex}")
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

    #[test]
    fn member_id_is_host_and_sha256_hex_of_the_data_directory() {
        // sha256("abc") is the FIPS 180-2 test vector.
        assert_eq!(
            member_id("joc-0", "abc"),
            "joc-0:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let id = member_id("joc-1", "/var/sos-berlin.com/js7/joc");
        assert!(id.starts_with("joc-1:"));
        assert_eq!(id.len(), "joc-1:".len() + 64);
        assert_eq!(hostname_of(&id), "joc-1");
        assert_eq!(hostname_of("no-colon"), "no-colon");
    }
}
