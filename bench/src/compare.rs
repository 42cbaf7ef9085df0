//! `keelson-bench compare`: reads run reports of several targets (each workload run a
//! few times per target, interleaved), picks the best or median run per workload and
//! target, and prints side-by-side tables with candidate/baseline ratios. Runs that name a
//! reference run (`--versus-label`, e.g. a cluster node against single-node Keelson) get a
//! table of their own with run/reference ratios.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::report::{fmt_ms, num, ReportError, RunReport, Versus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pick {
    /// The run with the highest req/s.
    Best,
    /// The run with the median req/s (the lower middle one for an even count).
    Median,
}

/// Why the comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("--labels needs at least a candidate and a baseline, e.g. keelson,distribution")]
    Labels,
    #[error("writing the comparison: {0}")]
    Io(#[from] std::io::Error),
}

/// One workload row: the chosen run per label (in `labels` order).
#[derive(Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub runs: BTreeMap<String, RunReport>,
    pub run_counts: BTreeMap<String, usize>,
    pub req_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
}

/// A run compared with the reference run it names (picked the same way).
#[derive(Debug, Serialize)]
pub struct Relative {
    pub name: String,
    pub label: String,
    pub run: RunReport,
    pub run_count: usize,
    pub versus: Versus,
    pub reference: Option<RunReport>,
    pub req_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
}

/// Everything `compare` prints.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub rows: Vec<Row>,
    pub relative: Vec<Relative>,
}

fn pick(mut runs: Vec<RunReport>, how: Pick) -> Option<RunReport> {
    // Runs that were cut short by errors only count when nothing else is there.
    if runs.iter().any(|r| !r.aborted) {
        runs.retain(|r| !r.aborted);
    }
    runs.sort_by(|a, b| a.req_per_s.total_cmp(&b.req_per_s));
    match how {
        Pick::Best => runs.pop(),
        Pick::Median => {
            if runs.is_empty() {
                None
            } else {
                let i = (runs.len() - 1) / 2;
                Some(runs.swap_remove(i))
            }
        }
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

pub fn build(files: &[PathBuf], labels: &[String], how: Pick) -> Result<Comparison, CompareError> {
    if labels.len() < 2 {
        return Err(CompareError::Labels);
    }
    let mut order: Vec<(String, String)> = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<RunReport>> = BTreeMap::new();
    for f in files {
        let r = RunReport::read_json(f)?;
        let key = (r.name.clone(), r.label.clone());
        if !order.contains(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(r);
    }
    let mut picked: BTreeMap<(String, String), (RunReport, usize)> = BTreeMap::new();
    for (key, g) in groups {
        let n = g.len();
        if let Some(r) = pick(g, how) {
            picked.insert(key, (r, n));
        }
    }
    let req = |r: &RunReport| Some(r.req_per_s);
    let p99 = |r: &RunReport| r.latency.as_ref().map(|l| l.p99_ms);

    let mut rows = Vec::new();
    let mut names: Vec<&String> = Vec::new();
    for (name, label) in &order {
        if labels.contains(label) && !names.contains(&name) {
            names.push(name);
        }
    }
    for name in names {
        let mut runs = BTreeMap::new();
        let mut run_counts = BTreeMap::new();
        for l in labels {
            if let Some((r, n)) = picked.get(&(name.clone(), l.clone())) {
                run_counts.insert(l.clone(), *n);
                runs.insert(l.clone(), r.clone());
            }
        }
        let get = |l: &String, f: fn(&RunReport) -> Option<f64>| runs.get(l).and_then(f);
        rows.push(Row {
            req_ratio: ratio(get(&labels[0], req), get(&labels[1], req)),
            p99_ratio: ratio(get(&labels[0], p99), get(&labels[1], p99)),
            name: name.clone(),
            runs,
            run_counts,
        });
    }

    let mut relative = Vec::new();
    for key in &order {
        let Some((run, n)) = picked.get(key) else { continue };
        let Some(versus) = run.versus.clone() else { continue };
        let reference = picked
            .get(&(versus.name.clone(), versus.label.clone()))
            .map(|(r, _)| r.clone());
        relative.push(Relative {
            name: key.0.clone(),
            label: key.1.clone(),
            req_ratio: ratio(req(run), reference.as_ref().and_then(req)),
            p99_ratio: ratio(p99(run), reference.as_ref().and_then(p99)),
            run: run.clone(),
            run_count: *n,
            versus,
            reference,
        });
    }
    Ok(Comparison { rows, relative })
}

fn print_table(out: &mut impl Write, head: &[String], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = w[i].saturating_sub(c.chars().count());
                if i == 0 {
                    format!("{c}{}", " ".repeat(pad))
                } else {
                    format!("{}{c}", " ".repeat(pad))
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    writeln!(out, "{}", line(head))?;
    writeln!(out, "{}", "-".repeat(w.iter().sum::<usize>() + 2 * (w.len() - 1)))?;
    for r in rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(())
}

pub fn print(out: &mut impl Write, cmp: &Comparison, labels: &[String], how: Pick) -> std::io::Result<()> {
    let rows = &cmp.rows;
    let (c, b) = (&labels[0], &labels[1]);
    let extra = &labels[2..];
    let dash = || "-".to_string();
    let cell = |row: &Row, l: &String, f: &dyn Fn(&RunReport) -> Option<String>| {
        row.runs.get(l).and_then(f).unwrap_or_else(dash)
    };
    let ratio_s = |r: Option<f64>| r.map(|r| format!("{r:.2}x")).unwrap_or_else(dash);
    let how_s = match how {
        Pick::Best => "best",
        Pick::Median => "median",
    };

    writeln!(
        out,
        "Throughput ({how_s} run per target; ratio = {c}/{b}, higher is better for {c})"
    )?;
    let mut head = vec![
        "workload".to_string(),
        format!("{c} req/s"),
        format!("{c} MB/s"),
        format!("{b} req/s"),
        format!("{b} MB/s"),
        "ratio".to_string(),
    ];
    head.extend(extra.iter().map(|l| format!("{l} req/s")));
    head.push("runs".to_string());
    let mut table = Vec::new();
    for row in rows {
        let mut t = vec![
            row.name.clone(),
            cell(row, c, &|r| Some(num(r.req_per_s))),
            cell(row, c, &|r| Some(num(r.mb_per_s))),
            cell(row, b, &|r| Some(num(r.req_per_s))),
            cell(row, b, &|r| Some(num(r.mb_per_s))),
            ratio_s(row.req_ratio),
        ];
        t.extend(extra.iter().map(|l| cell(row, l, &|r| Some(num(r.req_per_s)))));
        t.push(
            labels
                .iter()
                .map(|l| row.run_counts.get(l).copied().unwrap_or(0).to_string())
                .collect::<Vec<_>>()
                .join("/"),
        );
        table.push(t);
    }
    print_table(out, &head, &table)?;

    writeln!(out)?;
    writeln!(
        out,
        "Latency and server memory (ratio = {c}/{b}, lower is better for {c})"
    )?;
    let head: Vec<String> = vec![
        "workload".into(),
        format!("{c} p50"),
        format!("{b} p50"),
        format!("{c} p99"),
        format!("{b} p99"),
        "p99 ratio".into(),
        format!("{c} p999"),
        format!("{b} p999"),
        format!("{c} RSS"),
        format!("{b} RSS"),
        "errors".into(),
    ];
    let lat = |f: fn(&crate::stats::Latency) -> f64| move |r: &RunReport| r.latency.as_ref().map(|l| fmt_ms(f(l)));
    let rss = |r: &RunReport| r.server_rss.map(|s| format!("{:.0} MiB", s.max_kib as f64 / 1024.0));
    let mut table = Vec::new();
    for row in rows {
        table.push(vec![
            row.name.clone(),
            cell(row, c, &lat(|l| l.p50_ms)),
            cell(row, b, &lat(|l| l.p50_ms)),
            cell(row, c, &lat(|l| l.p99_ms)),
            cell(row, b, &lat(|l| l.p99_ms)),
            ratio_s(row.p99_ratio),
            cell(row, c, &lat(|l| l.p999_ms)),
            cell(row, b, &lat(|l| l.p999_ms)),
            cell(row, c, &rss),
            cell(row, b, &rss),
            format!(
                "{}/{}",
                cell(row, c, &|r| Some(r.errors.to_string())),
                cell(row, b, &|r| Some(r.errors.to_string()))
            ),
        ]);
    }
    print_table(out, &head, &table)?;
    let mut first = true;
    for row in rows {
        for (l, r) in &row.runs {
            if let Some(e) = r.error_samples.first() {
                if first {
                    writeln!(out)?;
                    writeln!(out, "First error per workload and target:")?;
                    first = false;
                }
                writeln!(out, "  [{}] {l}: {e}", row.name)?;
            }
        }
    }
    if !cmp.relative.is_empty() {
        writeln!(out)?;
        print_relative(out, &cmp.relative, how_s)?;
    }
    Ok(())
}

/// The table of runs against the reference run each names.
fn print_relative(out: &mut impl Write, relative: &[Relative], how_s: &str) -> std::io::Result<()> {
    writeln!(
        out,
        "Against a reference run ({how_s} run each; ratio = req/s of the run / req/s of the reference)"
    )?;
    let head: Vec<String> = [
        "workload",
        "target",
        "req/s",
        "MB/s",
        "p99",
        "reference",
        "ref req/s",
        "ref MB/s",
        "ratio",
        "p99 ratio",
        "RSS",
        "errors",
        "runs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let dash = || "-".to_string();
    let ratio_s = |r: Option<f64>| r.map(|r| format!("{r:.2}x")).unwrap_or_else(dash);
    let mut table = Vec::new();
    for r in relative {
        let reference = r.reference.as_ref();
        table.push(vec![
            r.name.clone(),
            r.label.clone(),
            num(r.run.req_per_s),
            num(r.run.mb_per_s),
            r.run.latency.as_ref().map(|l| fmt_ms(l.p99_ms)).unwrap_or_else(dash),
            if r.versus.name == r.name {
                r.versus.label.clone()
            } else {
                format!("{} [{}]", r.versus.label, r.versus.name)
            },
            reference.map(|x| num(x.req_per_s)).unwrap_or_else(dash),
            reference.map(|x| num(x.mb_per_s)).unwrap_or_else(dash),
            ratio_s(r.req_ratio),
            ratio_s(r.p99_ratio),
            r.run
                .server_rss
                .map(|s| format!("{:.0} MiB", s.max_kib as f64 / 1024.0))
                .unwrap_or_else(dash),
            r.run.errors.to_string(),
            r.run_count.to_string(),
        ]);
    }
    print_table(out, &head, &table)?;
    for r in relative {
        if let Some(e) = r.run.error_samples.first() {
            writeln!(out, "  first error [{}] {}: {e}", r.name, r.label)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, label: &str, rps: f64) -> RunReport {
        RunReport {
            name: name.into(),
            label: label.into(),
            workload: "get".into(),
            url: String::new(),
            repo: String::new(),
            concurrency: 1,
            size_bytes: 1,
            chunk_bytes: None,
            duration_limit_s: None,
            request_limit: None,
            elapsed_s: 1.0,
            ok: 1,
            errors: 0,
            aborted: false,
            error_samples: vec![],
            bytes: 1,
            req_per_s: rps,
            mb_per_s: rps / 1e6,
            latency: None,
            server_rss: None,
            finished_unix_s: 0,
            setup_url: None,
            blob_digest: None,
            versus: None,
        }
    }

    #[test]
    fn picks_and_ratios() {
        let dir = std::env::temp_dir().join(format!("kb-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut files = Vec::new();
        for (i, (n, l, r)) in [("w", "k", 10.0), ("w", "k", 30.0), ("w", "k", 20.0), ("w", "d", 10.0)]
            .into_iter()
            .enumerate()
        {
            let p = dir.join(format!("{i}.json"));
            report(n, l, r).write_json(&p).expect("write");
            files.push(p);
        }
        let labels = vec!["k".to_string(), "d".to_string()];
        let best = build(&files, &labels, Pick::Best).expect("build");
        assert_eq!(best.rows[0].req_ratio, Some(3.0));
        assert!(best.relative.is_empty());
        let med = build(&files, &labels, Pick::Median).expect("build");
        assert_eq!(med.rows[0].req_ratio, Some(2.0));
        let mut out = Vec::new();
        print(&mut out, &best, &labels, Pick::Best).expect("print");
        assert!(String::from_utf8_lossy(&out).contains("3.00x"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(build(&files, &labels[..1], Pick::Best).is_err());
    }

    #[test]
    fn relative_rows_name_their_reference() {
        let dir = std::env::temp_dir().join(format!("kb-compare-rel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let versus = |label: &str, name: &str| {
            Some(Versus {
                label: label.into(),
                name: name.into(),
            })
        };
        let mut cluster = report("w [leader]", "cluster", 5.0);
        cluster.versus = versus("k", "w");
        let mut orphan = report("x [lb]", "cluster", 7.0);
        orphan.versus = versus("k", "no such row");
        let mut files = Vec::new();
        for (i, r) in [report("w", "k", 10.0), report("w", "d", 2.0), cluster, orphan]
            .into_iter()
            .enumerate()
        {
            let p = dir.join(format!("{i}.json"));
            r.write_json(&p).expect("write");
            files.push(p);
        }
        let labels = vec!["k".to_string(), "d".to_string()];
        let cmp = build(&files, &labels, Pick::Best).expect("build");
        // Cluster runs stay out of the main table.
        assert_eq!(cmp.rows.len(), 1);
        assert_eq!(cmp.rows[0].req_ratio, Some(5.0));
        assert_eq!(cmp.relative.len(), 2);
        assert_eq!(cmp.relative[0].name, "w [leader]");
        assert_eq!(cmp.relative[0].req_ratio, Some(0.5));
        assert!(cmp.relative[1].reference.is_none());
        assert_eq!(cmp.relative[1].req_ratio, None);
        let mut out = Vec::new();
        print(&mut out, &cmp, &labels, Pick::Best).expect("print");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("0.50x"), "{text}");
        assert!(text.contains("k [no such row]"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
