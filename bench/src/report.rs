//! One run's result: the JSON document written with `--json` (also what `compare`
//! reads) and the table printed on stdout.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::rss::RssStats;
use crate::stats::Latency;
use crate::units::ByteSize;

/// Why a report could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a keelson-bench report: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Row name used by `compare` (e.g. "blob push 1GiB c1"); defaults to the workload.
    pub name: String,
    /// Which target this is (e.g. "keelson", "distribution").
    pub label: String,
    pub workload: String,
    pub url: String,
    pub repo: String,
    pub concurrency: usize,
    pub size_bytes: u64,
    pub chunk_bytes: Option<u64>,
    pub duration_limit_s: Option<f64>,
    pub request_limit: Option<u64>,
    pub elapsed_s: f64,
    pub ok: u64,
    pub errors: u64,
    pub aborted: bool,
    pub error_samples: Vec<String>,
    pub bytes: u64,
    pub req_per_s: f64,
    /// 10^6 bytes per second of payload (blob/manifest bodies, not headers).
    pub mb_per_s: f64,
    pub latency: Option<Latency>,
    pub server_rss: Option<RssStats>,
    /// When the run ended, seconds since the Unix epoch.
    pub finished_unix_s: u64,
    /// Where the setup pushes went, when not to `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_url: Option<String>,
    /// The digest of the blob a pull run read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_digest: Option<String>,
    /// The run this one is compared with in `compare`'s relative table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versus: Option<Versus>,
}

/// A run to compare with: the run of target `label` in row `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versus {
    pub label: String,
    pub name: String,
}

impl RunReport {
    pub fn write_json(&self, path: &Path) -> Result<(), ReportError> {
        let werr = |source| ReportError::Write {
            path: path.to_path_buf(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| werr(e.into()))?;
        std::fs::write(path, text + "\n").map_err(werr)
    }

    pub fn read_json(path: &Path) -> Result<RunReport, ReportError> {
        let text = std::fs::read(path).map_err(|source| ReportError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| ReportError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// One line: what ran, throughput, latency, errors, memory.
    pub fn print_line(&self, out: &mut impl Write) -> std::io::Result<()> {
        let lat = self
            .latency
            .as_ref()
            .map(|l| {
                format!(
                    "p50 {} p99 {} p999 {}",
                    fmt_ms(l.p50_ms),
                    fmt_ms(l.p99_ms),
                    fmt_ms(l.p999_ms)
                )
            })
            .unwrap_or_else(|| "no successful request".into());
        let rss = self
            .server_rss
            .map(|r| format!(", RSS max {:.0} MiB", r.max_kib as f64 / 1024.0))
            .unwrap_or_default();
        writeln!(
            out,
            "{}: {} req/s, {} MB/s, {lat}, {} ok, {} errors{rss}{}",
            self.label,
            num(self.req_per_s),
            num(self.mb_per_s),
            self.ok,
            self.errors,
            if self.aborted { " (aborted)" } else { "" }
        )?;
        if let Some(e) = self.error_samples.first() {
            writeln!(out, "  first error: {e}")?;
        }
        Ok(())
    }

    /// The human table.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let lat = |f: fn(&Latency) -> f64| {
            self.latency
                .as_ref()
                .map(|l| fmt_ms(f(l)))
                .unwrap_or_else(|| "-".into())
        };
        let mut rows: Vec<(&str, String)> = vec![
            ("name", self.name.clone()),
            ("target", format!("{} ({})", self.label, self.url)),
            ("workload", format!("{} on {}", self.workload, self.repo)),
            ("size", ByteSize(self.size_bytes).to_string()),
        ];
        if let Some(c) = self.chunk_bytes {
            rows.push(("chunk", ByteSize(c).to_string()));
        }
        rows.extend([
            ("concurrency", self.concurrency.to_string()),
            ("elapsed", format!("{:.2} s", self.elapsed_s)),
            (
                "ok / errors",
                format!(
                    "{} / {}{}",
                    self.ok,
                    self.errors,
                    if self.aborted {
                        " (aborted: too many errors)"
                    } else {
                        ""
                    }
                ),
            ),
            (
                "throughput",
                format!("{} req/s   {} MB/s", num(self.req_per_s), num(self.mb_per_s)),
            ),
            ("latency p50", lat(|l| l.p50_ms)),
            ("latency p99", lat(|l| l.p99_ms)),
            ("latency p999", lat(|l| l.p999_ms)),
            ("latency max", lat(|l| l.max_ms)),
        ]);
        if let Some(r) = &self.server_rss {
            rows.push((
                "server RSS",
                format!(
                    "max {:.1} MiB (start {:.1}, end {:.1})",
                    r.max_kib as f64 / 1024.0,
                    r.start_kib as f64 / 1024.0,
                    r.end_kib as f64 / 1024.0
                ),
            ));
        }
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            writeln!(out, "{k:<w$}  {v}")?;
        }
        for e in &self.error_samples {
            writeln!(out, "error: {e}")?;
        }
        Ok(())
    }
}

/// A rate with about four significant digits.
pub fn num(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

pub fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{:.0} µs", ms * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_print() {
        let r = RunReport {
            name: "n".into(),
            label: "l".into(),
            workload: "blob-push".into(),
            url: "http://127.0.0.1:1".into(),
            repo: "a/b".into(),
            concurrency: 1,
            size_bytes: 4096,
            chunk_bytes: None,
            duration_limit_s: Some(1.0),
            request_limit: None,
            elapsed_s: 1.0,
            ok: 1,
            errors: 0,
            aborted: false,
            error_samples: vec![],
            bytes: 4096,
            req_per_s: 1.0,
            mb_per_s: 0.004,
            latency: None,
            server_rss: None,
            finished_unix_s: 0,
            setup_url: None,
            blob_digest: None,
            versus: None,
        };
        let dir = std::env::temp_dir().join(format!("kb-report-{}", std::process::id()));
        r.write_json(&dir).expect("write");
        let back = RunReport::read_json(&dir).expect("read");
        let _ = std::fs::remove_file(&dir);
        assert_eq!(back.name, "n");
        let mut out = Vec::new();
        r.print(&mut out).expect("print");
        assert!(String::from_utf8_lossy(&out).contains("4KiB"));
        assert_eq!(fmt_ms(0.25), "250 µs");
    }
}
