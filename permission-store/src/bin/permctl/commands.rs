//! One function per subcommand.

use std::time::Duration;

use porthole_identity::AppId;
use porthole_permission_store::{Grant, validate_table};
use porthole_permission_store_client::{HistoryFilter, HistoryRecord};

use crate::backend::{Access, Backend, CliError, Row};
use crate::output::{self, shown};
use crate::{Cli, Cmd, exit, table};

pub async fn run(cli: Cli) -> Result<(), CliError> {
    // Check arguments before touching the store, so a typo never opens
    // (or activates) anything.
    match &cli.command {
        Cmd::List { table, .. } | Cmd::Grant { table, .. } | Cmd::Revoke { table, .. } => {
            check_table(table)?
        }
        Cmd::History {
            table: Some(table), ..
        } => check_table(table)?,
        _ => {}
    }
    // App ids are not checked: the store holds whatever callers of
    // SetPermission chose (snap.firefox, firefox), and each of them must be
    // shown, revoked and reset. Only a new grant gets a warning.
    if let Cmd::Grant {
        app, permissions, ..
    } = &cli.command
    {
        check_permissions(permissions)?;
        warn_unusual_app(app);
    }
    match cli.command {
        Cmd::Import { dir } => return crate::gvdb::import(cli.db.as_deref(), dir, cli.json).await,
        Cmd::Export { dir } => return crate::gvdb::export(cli.db.as_deref(), dir, cli.json).await,
        _ => {}
    }
    let access = match cli.command {
        Cmd::Tables | Cmd::List { .. } | Cmd::Show { .. } | Cmd::History { .. } => Access::Read,
        Cmd::Revoke { .. } | Cmd::Reset { .. } => Access::Remove,
        Cmd::Grant { .. } => Access::Write,
        Cmd::Import { .. } | Cmd::Export { .. } => {
            unreachable!("handled before the store is opened")
        }
    };
    let timeout = Duration::from_secs(cli.timeout);
    let backend = Backend::connect(cli.db.as_deref(), access, timeout).await?;
    let json = cli.json;
    match cli.command {
        Cmd::Tables => tables(&backend, json).await,
        Cmd::List { table, id } => list(&backend, &table, id.as_deref(), json).await,
        Cmd::Show { app } => show(&backend, &app, json).await,
        Cmd::Grant {
            table,
            id,
            app,
            permissions,
            expires_in,
        } => {
            let expires = expires_in.map(|s| now() + s as i64);
            backend
                .set_permission(&table, true, &id, &app, &permissions, expires)
                .await?;
            let until = expires
                .map(|e| format!(" until {}", format_time(e)))
                .unwrap_or_default();
            output::line(&format!(
                "granted {} to {} on {}/{}{until}",
                shown(&permissions.join(",")),
                output::app(&app),
                shown(&table),
                shown(&id)
            ));
            Ok(())
        }
        Cmd::Revoke {
            table,
            id,
            app,
            permissions,
        } => revoke(&backend, &table, &id, &app, &permissions).await,
        Cmd::Reset { app } => {
            let n = backend.reset(&app).await?;
            if n == 0 && !backend.app_known(&app).await? {
                return Err(CliError::new(
                    exit::NOT_FOUND,
                    format!(
                        "no grants for {}: the store does not know this app",
                        output::app(&app)
                    ),
                ));
            }
            output::line(&format!(
                "removed the grants of {} from {n} id(s)",
                output::app(&app)
            ));
            Ok(())
        }
        Cmd::History { table, app, limit } => {
            // The limit is always sent, 0 (all) included.
            let filter = HistoryFilter {
                table,
                app,
                limit: Some(limit.into()),
            };
            history(&backend, &filter, json).await
        }
        Cmd::Import { .. } | Cmd::Export { .. } => {
            unreachable!("handled before the store is opened")
        }
    }
}

fn check_table(t: &str) -> Result<(), CliError> {
    validate_table(t).map_err(|e| CliError::new(exit::USAGE, e.to_string()))
}

/// An empty string grants nothing a portal understands, and a typo such as
/// `grant T I APP "$UNSET"` should not store it.
fn check_permissions(permissions: &[String]) -> Result<(), CliError> {
    if permissions.iter().any(String::is_empty) {
        return Err(CliError::new(
            exit::USAGE,
            "empty permission string: name the permission (e.g. yes), or use `permctl revoke` to take permissions away",
        ));
    }
    Ok(())
}

/// Flatpak apps have ids like org.example.App and host apps "", but the
/// store (like upstream) takes any string, and other portal backends use
/// ids such as `snap.firefox`. A grant to anything else is probably a typo,
/// so say so, and grant anyway.
fn warn_unusual_app(app: &str) {
    if app.is_empty() {
        return;
    }
    if let Err(e) = AppId::parse(app) {
        output::warn(&format!(
            "{app:?} is not a Flatpak app id ({e}); granting anyway, as the store accepts any app id"
        ));
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), CliError> {
    let text =
        serde_json::to_string_pretty(v).map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?;
    output::line(&text);
    Ok(())
}

async fn tables(b: &Backend, json: bool) -> Result<(), CliError> {
    let tables = b.tables().await?;
    if json {
        #[derive(serde::Serialize)]
        struct T<'a> {
            table: &'a str,
            ids: u32,
        }
        let list: Vec<T<'_>> = tables
            .iter()
            .map(|(table, ids)| T { table, ids: *ids })
            .collect();
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = tables
        .iter()
        .map(|(t, n)| vec![t.clone(), n.to_string()])
        .collect();
    table::print(&["TABLE", "IDS"], &rows);
    Ok(())
}

async fn list(b: &Backend, t: &str, id: Option<&str>, json: bool) -> Result<(), CliError> {
    let mut rows = b.entries(t).await?;
    if rows.is_empty() {
        return Err(CliError::new(
            exit::NOT_FOUND,
            format!("no table named {t:?} (see `permctl tables`)"),
        ));
    }
    if let Some(id) = id {
        rows.retain(|r| r.id == id);
        if rows.is_empty() {
            return Err(CliError::new(
                exit::NOT_FOUND,
                format!("no id {id:?} in table {t:?}"),
            ));
        }
    }
    if json {
        return print_json(&rows);
    }
    table::print(
        &["ID", "APP", "PERMISSIONS", "EXPIRES", "DATA"],
        &entry_rows(&rows),
    );
    Ok(())
}

fn entry_rows(rows: &[Row]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for r in rows {
        if r.apps.is_empty() {
            out.push(vec![
                r.id.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                r.data.clone(),
            ]);
        }
        for (app, g) in &r.apps {
            out.push(vec![
                r.id.clone(),
                app.clone(),
                perms(g),
                expiry(g),
                r.data.clone(),
            ]);
        }
    }
    out
}

fn perms(g: &Grant) -> String {
    if g.permissions.is_empty() {
        "-".into()
    } else {
        g.permissions.join(",")
    }
}

fn expiry(g: &Grant) -> String {
    g.expires.map(format_time).unwrap_or_else(|| "never".into())
}

async fn show(b: &Backend, app: &str, json: bool) -> Result<(), CliError> {
    let grants = b.app_grants(app).await?;
    if grants.is_empty() && !b.app_known(app).await? {
        return Err(CliError::new(
            exit::NOT_FOUND,
            format!(
                "no grants for {}: the store does not know this app",
                output::app(app)
            ),
        ));
    }
    if json {
        #[derive(serde::Serialize)]
        struct G<'a> {
            table: &'a str,
            id: &'a str,
            permissions: &'a [String],
            expires: Option<i64>,
        }
        let list: Vec<G<'_>> = grants
            .iter()
            .map(|(t, id, g)| G {
                table: t,
                id,
                permissions: &g.permissions,
                expires: g.expires,
            })
            .collect();
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = grants
        .iter()
        .map(|(t, id, g)| vec![t.clone(), id.clone(), perms(g), expiry(g)])
        .collect();
    table::print(&["TABLE", "ID", "PERMISSIONS", "EXPIRES"], &rows);
    Ok(())
}

/// One write on the store's side (RevokePermissions), so a revocation
/// racing another change loses neither.
async fn revoke(
    b: &Backend,
    t: &str,
    id: &str,
    app: &str,
    remove: &[String],
) -> Result<(), CliError> {
    let left = b.revoke_permissions(t, id, app, remove).await?;
    let what = if remove.is_empty() {
        "every permission".to_owned()
    } else {
        shown(&remove.join(","))
    };
    let kept = if left.is_empty() {
        String::new()
    } else {
        format!(" (it keeps {})", shown(&left.join(",")))
    };
    output::line(&format!(
        "revoked {what} of {} on {}/{}{kept}",
        output::app(app),
        shown(t),
        shown(id)
    ));
    Ok(())
}

/// One record as `permctl history --json` prints it. The wire record's
/// serde form is an `a{sv}` dictionary (`time`, absent keys left out); the
/// JSON output keeps its own, older shape (`time_us`, every key present,
/// `null` when it does not apply), which scripts read.
#[derive(serde::Serialize)]
struct HistoryJson<'a> {
    seq: i64,
    time_us: i64,
    action: &'a str,
    table: &'a str,
    id: &'a str,
    app: Option<&'a str>,
    old: Option<&'a [String]>,
    new: Option<&'a [String]>,
    caller: &'a str,
}

impl<'a> From<&'a HistoryRecord> for HistoryJson<'a> {
    fn from(r: &'a HistoryRecord) -> Self {
        Self {
            seq: r.seq,
            time_us: r.time,
            action: &r.action,
            table: &r.table,
            id: &r.id,
            app: r.app.as_deref(),
            old: r.old.as_deref(),
            new: r.new.as_deref(),
            caller: &r.caller,
        }
    }
}

async fn history(b: &Backend, q: &HistoryFilter, json: bool) -> Result<(), CliError> {
    let records = b.history(q).await?;
    if json {
        let rows: Vec<HistoryJson<'_>> = records.iter().map(HistoryJson::from).collect();
        return print_json(&rows);
    }
    let list = |p: &Option<Vec<String>>| match p {
        None => "-".to_owned(),
        Some(p) if p.is_empty() => "[]".to_owned(),
        Some(p) => p.join(","),
    };
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                format_time(r.time / 1_000_000),
                r.action.clone(),
                r.table.clone(),
                r.id.clone(),
                r.app.clone().unwrap_or_else(|| "-".into()),
                list(&r.old),
                list(&r.new),
                if r.caller.is_empty() {
                    "host".into()
                } else {
                    r.caller.clone()
                },
            ]
        })
        .collect();
    table::print(
        &[
            "TIME", "ACTION", "TABLE", "ID", "APP", "OLD", "NEW", "CALLER",
        ],
        &rows,
    );
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// "90s", "30m", "12h", "7d", or plain seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 12h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use s, m, h or d")),
    };
    match n.checked_mul(mult) {
        Some(0) => Err("a grant that expires at once is no grant; use revoke".into()),
        Some(v) if v <= 100 * 365 * 86400 => Ok(v),
        _ => Err(format!("{s:?} is more than 100 years")),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` (days-from-civil, Howard Hinnant's
/// algorithm). Every time permctl shows says UTC, so none can be read as
/// local time.
pub fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `history --json` prints the shape it printed before the store
    /// returned the wire record: `time_us`, every key in this order, `null`
    /// for what does not apply.
    #[test]
    fn history_json_shape() {
        let r = HistoryRecord {
            seq: 2,
            time: 1_700_000_000_123_456,
            action: "data".into(),
            table: "devices".into(),
            id: "camera".into(),
            caller: "org.example.Caller".into(),
            app: None,
            old: None,
            new: Some(vec!["yes".into()]),
        };
        assert_eq!(
            serde_json::to_string(&HistoryJson::from(&r)).unwrap(),
            r#"{"seq":2,"time_us":1700000000123456,"action":"data","table":"devices","id":"camera","app":null,"old":null,"new":["yes"],"caller":"org.example.Caller"}"#
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("12h"), Ok(43200));
        assert_eq!(parse_duration("7d"), Ok(604800));
        assert_eq!(parse_duration("45"), Ok(45));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("99999999999d").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_time(1_795_000_000), "2026-11-18 11:06:40 UTC");
    }
}
