//! JOC's release, read from the image tag, and the releases whose rules
//! joc-ha was checked against (docs/joc-facts.md, on SOS's `release/2.7`,
//! `release/2.8` and master = 2.9).
//!
//! What differs between them, as far as joc-ha is concerned:
//! * 2.7 and 2.8: `ordering` (0–99) and `as_api_server` in
//!   `joc-settings.properties` as in 2.9 (SOS's `Globals.java` and
//!   `CheckInstance.java` on each branch), and the `${JS7_DBMS_*}`
//!   placeholders of `hibernate.cfg.xml` (`SOSHibernateJS7Resolver`).
//! * 2.8.1 (JOC-2090) reworked the switch-over in `JocCluster.java`.
//! * 2.9.0 (JOC-2206) changed JOC's entity timestamps from `java.util.Date`
//!   to `Instant`, with columns such as `MODIFIED` filled with the
//!   database's UTC time by an annotation (`@SOSCurrentTimestampUtc`, e.g.
//!   `sos-joc/sos-joc-db/.../joc/DBItemJocConfiguration.java`), and
//!   `DBLayerJocCluster.getNowUTC` now reads the database's UTC timestamp
//!   through a new session method (`getCurrentTimestampUtcAsDate`). The cluster rules
//!   joc-ha relies on (heartbeats and switch requests judged by the
//!   database's UTC clock, whole seconds) keep their meaning; the stand-in
//!   and the sidecar read those columns as UTC on every release.

/// The JOC releases (major, minor) joc-ha knows.
pub const SUPPORTED: [(u32, u32); 3] = [(2, 7), (2, 8), (2, 9)];

/// A JOC release read from an image tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JocVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: Option<u32>,
}

impl JocVersion {
    pub fn is_supported(self) -> bool {
        SUPPORTED.contains(&(self.major, self.minor))
    }
}

impl std::fmt::Display for JocVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.patch {
            Some(patch) => write!(f, "{}.{}.{patch}", self.major, self.minor),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

/// The supported releases in words: `2.7, 2.8, 2.9`.
pub fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|(major, minor)| format!("{major}.{minor}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the JOC release from an image reference's tag: SOS tags its images
/// `sosberlin/js7:joc-2-8-1` (also accepted: `joc-2.8.1`, `2.8.1`, a suffix
/// such as `-SNAPSHOT` after the numbers). `None` for a reference with no
/// tag, only a digest, or a tag without a release (`latest`).
pub fn joc_version(image: &str) -> Option<JocVersion> {
    let without_digest = image.split('@').next().unwrap_or_default();
    // The tag follows the last ':' after the last '/' (a registry may have a port).
    let last_part = without_digest.rsplit('/').next().unwrap_or_default();
    let (_, tag) = last_part.split_once(':')?;
    let tag = tag.strip_prefix("joc-").unwrap_or(tag);
    let mut numbers = tag.split(['-', '.']);
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    let patch = numbers.next().and_then(|p| p.parse().ok());
    Some(JocVersion {
        major,
        minor,
        patch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_image_tags() {
        let v = |major, minor, patch| {
            Some(JocVersion {
                major,
                minor,
                patch,
            })
        };
        let cases = [
            ("sosberlin/js7:joc-2-8-1", v(2, 8, Some(1))),
            ("sosberlin/js7:joc-2.8.2", v(2, 8, Some(2))),
            ("docker.io/sosberlin/js7:joc-2-7-3", v(2, 7, Some(3))),
            (
                "registry.example:5000/mirror/js7:joc-2-9-0-SNAPSHOT",
                v(2, 9, Some(0)),
            ),
            ("registry.example:5000/js7:2.9.1", v(2, 9, Some(1))),
            ("sosberlin/js7:joc-2-9", v(2, 9, None)),
            ("sosberlin/js7:joc-3-0-0", v(3, 0, Some(0))),
            ("sosberlin/js7:latest", None),
            ("sosberlin/js7", None),
            ("registry.example:5000/js7", None),
            ("sosberlin/js7@sha256:0123abcd", None),
            ("sosberlin/js7:joc-2-8-1@sha256:0123abcd", v(2, 8, Some(1))),
        ];
        for (image, want) in cases {
            assert_eq!(joc_version(image), want, "{image}");
        }
    }

    #[test]
    fn supported_releases() {
        for (image, supported) in [
            ("sosberlin/js7:joc-2-7-1", true),
            ("sosberlin/js7:joc-2-8-2", true),
            ("sosberlin/js7:joc-2-9-0", true),
            ("sosberlin/js7:joc-2-6-5", false),
            ("sosberlin/js7:joc-2-10-0", false),
        ] {
            let version = joc_version(image).expect("a version");
            assert_eq!(version.is_supported(), supported, "{image}");
        }
        assert_eq!(supported_list(), "2.7, 2.8, 2.9");
    }
}
