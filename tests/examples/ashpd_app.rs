//! A portal client written with ashpd, as any Rust app would be, run by
//! `tests/tests/portals.rs` inside `porthole run` (so it talks to the portal
//! through the sandbox's filtered bus proxy). It opens the file the backend
//! picks and reads it through the document path it gets, saves through
//! SaveFile and SaveFiles, reads the colour scheme and the network status,
//! and prints what it observed as one JSON object on standard output.
//! Every step's failure is printed too (as "error: ..."), so the test says
//! which call went wrong.

use ashpd::desktop::file_chooser::SelectedFiles;
use ashpd::desktop::network_monitor::NetworkMonitor;
use ashpd::desktop::settings::Settings;
use serde_json::{Value, json};

fn uris(files: &SelectedFiles) -> Vec<String> {
    files.uris().iter().map(|u| u.as_str().to_owned()).collect()
}

async fn open() -> Result<Value, ashpd::Error> {
    let files = SelectedFiles::open_file()
        .title("Pick a file to read")
        .modal(true)
        .send()
        .await?
        .response()?;
    let uris = uris(&files);
    let read: Vec<String> = uris
        .iter()
        .map(
            |u| match porthole_tests::portal::file_uri_path(u).map(std::fs::read_to_string) {
                Some(Ok(text)) => text,
                Some(Err(e)) => format!("error: {e}"),
                None => format!("error: not a file URI: {u}"),
            },
        )
        .collect();
    Ok(json!({"uris": uris, "read": read}))
}

/// Writes `text` through each URI.
fn write_all(uris: &[String], text: &str) -> Vec<String> {
    uris.iter()
        .map(
            |u| match porthole_tests::portal::file_uri_path(u).map(|p| std::fs::write(p, text)) {
                Some(Ok(())) => "ok".to_owned(),
                Some(Err(e)) => format!("error: {e}"),
                None => format!("error: not a file URI: {u}"),
            },
        )
        .collect()
}

async fn save() -> Result<Value, ashpd::Error> {
    let files = SelectedFiles::save_file()
        .title("Save the report")
        .current_name("report.txt")
        .send()
        .await?
        .response()?;
    let uris = uris(&files);
    let wrote = write_all(&uris, "saved by SaveFile\n");
    Ok(json!({"uris": uris, "wrote": wrote}))
}

async fn save_many() -> Result<Value, ashpd::Error> {
    let files = SelectedFiles::save_files()
        .title("Save both parts")
        .files(["one.txt", "two.txt"])?
        .send()
        .await?
        .response()?;
    let uris = uris(&files);
    let wrote = write_all(&uris, "saved by SaveFiles\n");
    Ok(json!({"uris": uris, "wrote": wrote}))
}

async fn settings() -> Result<Value, ashpd::Error> {
    let settings = Settings::new().await?;
    let scheme = settings.color_scheme().await?;
    Ok(json!({"color_scheme": format!("{scheme:?}"), "version": settings.version()}))
}

async fn network() -> Result<Value, ashpd::Error> {
    let monitor = NetworkMonitor::new().await?;
    let status = monitor.status().await?;
    Ok(json!({
        "available": status.is_available(),
        "metered": status.is_metered(),
        "connectivity": format!("{:?}", status.connectivity()),
        "available_call": monitor.is_available().await?,
    }))
}

fn outcome(result: Result<Value, ashpd::Error>) -> Value {
    result.unwrap_or_else(|e| json!({"error": e.to_string()}))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let report = json!({
        "open": outcome(open().await),
        "save": outcome(save().await),
        "save_files": outcome(save_many().await),
        "settings": outcome(settings().await),
        "network": outcome(network().await),
    });
    println!("{report}");
}
