//! Helpers shared by the benchmarks in `src/bin/bench_*.rs`: repeated measurements that
//! may fail ([`Samples`]), their median/min/max ([`Summary`]) and the JSON both are
//! reported as, so every benchmark's output reads and parses the same way.

use std::time::Duration;

use serde_json::{Value, json};

/// How many failure messages [`Samples`] keeps; later ones are only counted.
const KEPT_FAILURES: usize = 5;

/// Durations from repeated runs of one measurement, plus the runs that failed.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    ok: Vec<Duration>,
    failures: usize,
    first_failures: Vec<String>,
}

impl Samples {
    /// Records one run: its duration, or why it failed.
    pub fn push(&mut self, run: anyhow::Result<Duration>) {
        match run {
            Ok(d) => self.ok.push(d),
            Err(e) => {
                self.failures += 1;
                if self.first_failures.len() < KEPT_FAILURES {
                    self.first_failures.push(format!("{e:#}"));
                }
            }
        }
    }

    /// The successful runs, in the order they were recorded.
    pub fn durations(&self) -> &[Duration] {
        &self.ok
    }

    /// How many runs failed.
    pub fn failures(&self) -> usize {
        self.failures
    }

    /// The first few failure messages (see [`KEPT_FAILURES`]).
    pub fn first_failures(&self) -> &[String] {
        &self.first_failures
    }

    /// Median, min and max of the successful runs; `None` if none succeeded.
    pub fn summary(&self) -> Option<Summary> {
        Summary::of(&self.ok)
    }

    /// `{"n", "failures", "median_ms", "min_ms", "max_ms", "samples_ms", "first_failures"}`;
    /// the statistics are `null` when no run succeeded.
    pub fn to_json(&self) -> Value {
        let s = self.summary();
        json!({
            "n": self.ok.len(),
            "failures": self.failures,
            "median_ms": s.map(|s| ms(s.median)),
            "min_ms": s.map(|s| ms(s.min)),
            "max_ms": s.map(|s| ms(s.max)),
            "samples_ms": self.ok.iter().map(|&d| ms(d)).collect::<Vec<_>>(),
            "first_failures": self.first_failures,
        })
    }
}

/// Order statistics of a non-empty set of durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The middle value; the mean of the two middle values for an even count.
    pub median: Duration,
    pub min: Duration,
    pub max: Duration,
}

impl Summary {
    /// The summary of `samples`, or `None` if it is empty.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2
        };
        Some(Summary { median, min, max })
    }
}

/// `d` in milliseconds to the microsecond, as a float for tables and JSON.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The `--flag value` pairs of a benchmark's command line, in order; `-h`/`--help`
/// prints `usage` and exits.
pub fn flags(
    mut args: impl Iterator<Item = String>,
    usage: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{usage}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n{usage}"))?;
        pairs.push((flag, value));
    }
    Ok(pairs)
}

/// `value` of `flag` as a positive integer.
pub fn positive(flag: &str, value: &str) -> anyhow::Result<usize> {
    value
        .parse()
        .ok()
        .filter(|&n: &usize| n > 0)
        .ok_or_else(|| anyhow::anyhow!("{flag} {value:?}: need a positive integer"))
}

/// A `--targets a,b` list, each one of `known`.
pub fn targets(value: &str, known: &[&str]) -> anyhow::Result<Vec<String>> {
    let targets: Vec<String> = value.split(',').map(str::to_owned).collect();
    if let Some(bad) = targets.iter().find(|t| !known.contains(&t.as_str())) {
        anyhow::bail!("--targets: unknown {bad:?}; known: {}", known.join(", "));
    }
    Ok(targets)
}

/// A comma-separated list of `flag`'s values, each one of `known` (name, value).
pub fn choices<T: Copy>(flag: &str, value: &str, known: &[(&str, T)]) -> anyhow::Result<Vec<T>> {
    value
        .split(',')
        .map(|v| match known.iter().find(|(name, _)| *name == v) {
            Some(&(_, t)) => Ok(t),
            None => {
                let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
                anyhow::bail!("{flag} {v:?}: {}", names.join(" or "))
            }
        })
        .collect()
}

/// Writes `report` as pretty JSON to `path`, creating its directory.
pub fn write_json(path: &std::path::Path, report: &Value) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(report)? + "\n";
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

    fn ms_d(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn summary_of_odd_even_and_empty() {
        let odd = Summary::of(&[ms_d(30), ms_d(10), ms_d(20)]).unwrap();
        assert_eq!(
            odd,
            Summary {
                median: ms_d(20),
                min: ms_d(10),
                max: ms_d(30)
            }
        );
        let even = Summary::of(&[ms_d(40), ms_d(10), ms_d(20), ms_d(30)]).unwrap();
        assert_eq!(even.median, ms_d(25));
        assert_eq!((even.min, even.max), (ms_d(10), ms_d(40)));
        assert_eq!(Summary::of(&[ms_d(7)]).unwrap().median, ms_d(7));
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn samples_count_failures_and_keep_the_first_messages() {
        let mut s = Samples::default();
        s.push(Ok(ms_d(5)));
        for i in 0..KEPT_FAILURES + 3 {
            s.push(Err(anyhow!("boot {i} failed")));
        }
        s.push(Ok(ms_d(15)));
        assert_eq!(s.durations(), &[ms_d(5), ms_d(15)]);
        assert_eq!(s.failures(), KEPT_FAILURES + 3);
        assert_eq!(s.first_failures().len(), KEPT_FAILURES);
        assert_eq!(s.first_failures()[0], "boot 0 failed");

        let j = s.to_json();
        assert_eq!(j["n"], 2);
        assert_eq!(j["median_ms"], 10.0);
        assert_eq!(j["samples_ms"], json!([5.0, 15.0]));
    }

    #[test]
    fn ms_rounds_to_the_microsecond() {
        assert_eq!(ms(Duration::from_nanos(68_529_035_400)), 68_529.035);
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
    }

    #[test]
    fn all_failed_reports_null_statistics() {
        let mut s = Samples::default();
        s.push(Err(anyhow!("no reply")));
        assert_eq!(s.summary(), None);
        let j = s.to_json();
        assert!(j["median_ms"].is_null());
        assert_eq!(j["failures"], 1);
    }
}
