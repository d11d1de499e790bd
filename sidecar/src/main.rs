//! joc-ha-sidecar binary.

fn main() {
    eprintln!("joc-ha-sidecar: not implemented yet");
    std::process::exit(2);
}
