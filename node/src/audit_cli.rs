//! `keelson audit`: reads the replicated audit log (`GET /api/v1/audit`), newest first.

use crate::http_client::{say, CliError, Target};
use crate::lifecycle_cli::time;

/// Which records to show.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// A tenancy's records (its administrators may read them); without it, the records that
    /// belong to no tenancy (cluster administrator only).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only this actor (`<namespace>/<user>`, `keelson/admin`, `anonymous`).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this action, or actions under a prefix ending in `.` (`manifest.`).
    #[arg(long)]
    pub action: Option<String>,
    /// Only refused requests and failed logins (status 400 and above).
    #[arg(long)]
    pub failed: bool,
    /// Records at or after this time (milliseconds since the epoch).
    #[arg(long)]
    pub since_ms: Option<u64>,
    /// At most this many records (a page; the last line says how to read on).
    #[arg(short = 'n', long, default_value_t = 50)]
    pub limit: u32,
    /// Continue after this cursor (printed under a full page).
    #[arg(long)]
    pub after: Option<String>,
    /// Print the JSON answer.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(target: &Target, args: AuditArgs) -> Result<(), CliError> {
    let mut query = vec![format!("n={}", args.limit)];
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            query.push(format!("{k}={}", keelson_api::routes::percent_encode(&v)));
        }
    };
    add("namespace", args.namespace);
    add("actor", args.actor);
    add("action", args.action);
    add("since", args.since_ms.map(|t| t.to_string()));
    add("after", args.after);
    if args.failed {
        query.push("failed=true".into());
    }
    let answer = target
        .call("GET", &format!("/api/v1/audit?{}", query.join("&")), None)
        .await?;
    if args.json {
        say(&serde_json::to_string_pretty(&answer).unwrap_or_default());
        return Ok(());
    }
    say(&format!(
        "{:<20}  {:<22} {:<24} {:>6}  {:<15} {:>4}  TARGET",
        "TIME", "ACTOR", "ACTION", "STATUS", "SOURCE", "NODE"
    ));
    let events = answer["events"].as_array().cloned().unwrap_or_default();
    for e in &events {
        let text = |k: &str| e[k].as_str().unwrap_or("-").to_string();
        let number = |k: &str| e[k].as_u64().map_or("-".to_string(), |n| n.to_string());
        say(&format!(
            "{:<20}  {:<22} {:<24} {:>6}  {:<15} {:>4}  {}",
            time(&e["time_ms"]),
            text("actor"),
            text("action"),
            number("status"),
            text("source"),
            number("node"),
            text("target")
        ));
    }
    let counted = match events.len() {
        1 => "1 record".to_string(),
        n => format!("{n} records"),
    };
    match answer["next"].as_str() {
        Some(next) => say(&format!("{counted}; more with --after {next}")),
        None => say(&counted),
    }
    Ok(())
}
