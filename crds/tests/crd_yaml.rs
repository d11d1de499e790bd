//! The committed CRD YAML must be what the Rust types generate.

#[test]
fn committed_crd_matches_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/jocclusters.yaml");
    let committed = std::fs::read_to_string(path).expect("crds/jocclusters.yaml exists");
    let generated = joc_ha_crds::crd_yaml().expect("CRD renders");
    assert!(
        committed == generated,
        "crds/jocclusters.yaml differs from the Rust types: run `make crds` and commit the result"
    );
}
