//! Prints the JocCluster CRD; `make crds` writes it to `crds/jocclusters.yaml`.

fn main() -> std::process::ExitCode {
    match joc_ha_crds::crd_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("crdgen: cannot render the CRD: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
