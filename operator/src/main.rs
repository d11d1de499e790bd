//! joc-ha-operator: turns JocCluster resources into running JOC Cockpit clusters.

fn main() {
    eprintln!("joc-ha-operator: not implemented yet");
    std::process::exit(2);
}
