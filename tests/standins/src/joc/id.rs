//! Member id

use sha2::Digest as _;

/// `JocConfiguration`: `memberId = hostname + ":" + SOSString.hash256(dataDirectory.toString())`,
/// where `SOSString.hash256` is the lowercase hex SHA-256 of the UTF-8 bytes and
/// `dataDirectory = Paths.get(user.dir)`.
pub fn member_id(hostname: &str, data_dir: &str) -> String {
    let digest = sha2::Sha256::digest(java_path_string(data_dir).as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    format!("{hostname}:{hex}")
}

/// `Paths.get(s).toString()` on Unix: repeated slashes collapse, a trailing
/// slash goes (except for the root).
pub fn java_path_string(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut last_slash = false;
    for c in path.chars() {
        if c == '/' {
            if !last_slash {
                out.push(c);
            }
            last_slash = true;
        } else {
            out.push(c);
            last_slash = false;
        }
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    out
}
