//! The Helm chart end to end (filled in below).
