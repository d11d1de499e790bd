//! What the benchmarks share: percentiles and the results files under
//! `<repository>/target/joc-ha-bench/`.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

/// A benchmark binary's `main`: parsed options (an error exits 2), then
/// `run` on a two-thread runtime (an error exits 1), errors on stderr
/// prefixed with the binary's `name`.
pub fn run_main<O, F>(name: &str, options: Result<O>, run: impl FnOnce(O) -> F) -> ExitCode
where
    F: Future<Output = Result<()>>,
{
    let options = match options {
        Ok(options) => options,
        Err(error) => {
            eprintln!("{name}: {error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Rounds to 0.1.
pub fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Nearest-rank percentiles (p50, p99, max); zeros for no samples.
pub fn percentiles(samples: &[f64]) -> (f64, f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let rank = |p: f64| {
        let index = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index]
    };
    (rank(0.50), rank(0.99), sorted[sorted.len() - 1])
}

/// The repository root (whatever `CARGO_TARGET_DIR` is): this crate is
/// `tests/tools`.
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `<repository>/target/joc-ha-bench`, created.
pub fn results_dir() -> Result<PathBuf> {
    let dir = repository_root().join("target").join("joc-ha-bench");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Merges JSON objects into the results file `name` (one per line): a line
/// with the same `bench`, `backend` and `variant` replaces the old one,
/// others stay.
pub fn merge_results(name: &str, lines: &[serde_json::Value]) -> Result<PathBuf> {
    let path = results_dir()?.join(name);
    let key = |value: &serde_json::Value| {
        let field = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
        (field("bench"), field("backend"), field("variant"))
    };
    let mut merged: BTreeMap<(String, String, String), String> = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(&path) {
        for line in text.lines() {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
                merged.insert(key(&value), line.to_owned());
            }
        }
    }
    for line in lines {
        merged.insert(key(line), line.to_string());
    }
    let mut text = merged.into_values().collect::<Vec<_>>().join("\n");
    text.push('\n');
    std::fs::write(&path, text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentiles(&samples), (50.0, 99.0, 100.0));
        assert_eq!(percentiles(&[3.0]), (3.0, 3.0, 3.0));
        assert_eq!(percentiles(&[]), (0.0, 0.0, 0.0));
    }
}
