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

#[test]
fn the_chart_ships_the_same_crd() {
    let chart = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/joc-ha/crds/jocclusters.yaml"
    );
    let shipped =
        std::fs::read_to_string(chart).expect("charts/joc-ha/crds/jocclusters.yaml exists");
    let generated = joc_ha_crds::crd_yaml().expect("CRD renders");
    assert!(
        shipped == generated,
        "the chart's CRD differs from the Rust types: run `make crds` and commit the result"
    );
}
