//! joc-ha-sidecar: keeps the JOC Cockpit cluster lease in the shared database
//! (the `lease` module, which knows nothing of Kubernetes), turns it into pod
//! labels, and tells the cockpit container its role.
