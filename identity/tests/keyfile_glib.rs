//! Our key-file parser against GLib's `GKeyFile`, the one Flatpak and
//! xdg-desktop-portal read `/.flatpak-info` with.
//!
//! Thousands of generated files (a seeded PRNG, so every run sees the same
//! ones: odd escapes, comments, blank lines, repeated groups and keys,
//! locale keys, whitespace around `=`, CRLF, long lines, odd group names,
//! keys before any group, non-UTF-8 and NUL bytes) are parsed by ours and
//! by GLib through `/usr/bin/python3` and PyGObject. Accept and reject must
//! agree; for a file both accept, the groups, the keys, and each value as
//! written (`get_value`), unescaped (`get_string`) and as a list
//! (`get_string_list`, `None` where GLib fails) must be the same.
//!
//! Where we differ on purpose (each is checked below, not skipped):
//! - a repeated key: GLib's `get_keys` lists it once per line, ours once;
//!   both read its last value, so the keys are compared without repeats;
//! - a file with a NUL byte: GLib reads each line only up to the NUL, we
//!   refuse the file (no guessing what follows the NUL);
//! - a file that is not UTF-8: GLib loads it and fails each `get_string` of
//!   a value that is not UTF-8; every reader of ours wants strings, so we
//!   refuse the file;
//! - a locale suffix with a letter beyond ASCII (`Name[ñ]`): GLib takes
//!   Unicode letters and digits, we take ASCII ones (see `is_key_name`);
//! - translations: we keep every `Key[locale]`, as GLib does with
//!   `G_KEY_FILE_KEEP_TRANSLATIONS` (used here); with `G_KEY_FILE_NONE`, as
//!   xdg-desktop-portal loads, GLib drops those of other locales, which
//!   never include the keys that say who an app is.
//!
//! Every difference is one where we refuse what GLib reads, never one where
//! we read something else.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use porthole_identity::{KeyFile, KeyFileError};

const PYTHON: &str = "/usr/bin/python3";

/// Reads hex-encoded files, one a line, from stdin; answers one block per
/// file: `ERR`, or `OK` then `G <group>` and `K <key> <value> <string>
/// <list>` lines, every string hex-encoded (`!` where GLib fails, lists as
/// `=item,item,`).
const GLIB_SIDE: &str = r#"
import sys
import gi
gi.require_version("GLib", "2.0")
from gi.repository import GLib

def hx(s):
    return s.encode("utf-8").hex()

def field(f):
    try:
        return "=" + hx(f())
    except (GLib.Error, UnicodeDecodeError):
        return "!"

def strv(f):
    try:
        return "=" + "".join(hx(s) + "," for s in f())
    except (GLib.Error, UnicodeDecodeError):
        return "!"

out = sys.stdout
for line in sys.stdin:
    data = bytes.fromhex(line.strip())
    kf = GLib.KeyFile()
    try:
        kf.load_from_bytes(GLib.Bytes.new(data), GLib.KeyFileFlags.KEEP_TRANSLATIONS)
    except (GLib.Error, RuntimeError):
        # RuntimeError: the error's message quotes bytes that are not
        # UTF-8, so PyGObject cannot make a GLib.Error of it.
        out.write("ERR\n")
        continue
    out.write("OK\n")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        # PyGObject 3.42 frees a string array twice when one of its
        # strings is not UTF-8 (get_groups, get_keys): do not ask.
        out.write("UNDECODABLE\n")
        continue
    for g in kf.get_groups()[0]:
        out.write("G " + hx(g) + "\n")
        for k in kf.get_keys(g)[0]:
            out.write("K %s %s %s %s\n" % (
                hx(k),
                field(lambda: kf.get_value(g, k)),
                field(lambda: kf.get_string(g, k)),
                strv(lambda: kf.get_string_list(g, k)),
            ))
out.write("END\n")
"#;

/// What one side read from a file it accepted: groups in order, each with
/// its keys (without repeats) and their (raw, string, list) values.
type Reading = Vec<(String, Vec<KeyReading>)>;
type KeyReading = (String, Option<String>, Option<String>, Option<Vec<String>>);

#[derive(Debug, PartialEq)]
enum Outcome {
    Rejected,
    /// GLib loaded the file, which is not UTF-8 (so its names cannot be
    /// handed to Python as strings).
    Undecodable,
    Read(Reading),
}

fn ours(data: &[u8]) -> (Result<(), KeyFileError>, Outcome) {
    match KeyFile::parse_bytes(data) {
        Err(e) => (Err(e), Outcome::Rejected),
        Ok(kf) => {
            let reading = kf
                .groups()
                .into_iter()
                .map(|g| {
                    let keys = kf
                        .keys(g)
                        .into_iter()
                        .map(|k| {
                            (
                                k.to_owned(),
                                kf.get_raw(g, k).map(str::to_owned),
                                kf.get(g, k),
                                kf.get_list(g, k),
                            )
                        })
                        .collect();
                    (g.to_owned(), keys)
                })
                .collect();
            (Ok(()), Outcome::Read(reading))
        }
    }
}

fn unhex(s: &str) -> String {
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex from the GLib side"))
        .collect();
    String::from_utf8(bytes).expect("the GLib side sends UTF-8")
}

fn opt_field(s: &str) -> Option<String> {
    s.strip_prefix('=').map(unhex)
}

fn opt_list(s: &str) -> Option<Vec<String>> {
    let items = s.strip_prefix('=')?;
    Some(
        items
            .split_terminator(',')
            .map(unhex)
            .collect::<Vec<String>>(),
    )
}

/// Parses the GLib side's answer into one outcome per file.
fn read_glib_answers(text: &str) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        match line {
            "END" => return outcomes,
            "ERR" => outcomes.push(Outcome::Rejected),
            "OK" => {
                let mut reading: Reading = Vec::new();
                let mut undecodable = false;
                while let Some(next) = lines.peek() {
                    if *next == "UNDECODABLE" {
                        undecodable = true;
                    } else if let Some(g) = next.strip_prefix("G ") {
                        reading.push((unhex(g), Vec::new()));
                    } else if let Some(k) = next.strip_prefix("K ") {
                        let f: Vec<&str> = k.split(' ').collect();
                        let key = unhex(f[0]);
                        let keys = &mut reading.last_mut().expect("K after G").1;
                        // GLib lists a repeated key once per line; its value
                        // is the last one, which every entry reads.
                        if !keys.iter().any(|(k, ..)| *k == key) {
                            keys.push((key, opt_field(f[1]), opt_field(f[2]), opt_list(f[3])));
                        }
                    } else {
                        break;
                    }
                    lines.next();
                }
                outcomes.push(if undecodable {
                    Outcome::Undecodable
                } else {
                    Outcome::Read(reading)
                });
            }
            other => panic!("unexpected line from the GLib side: {other:?}"),
        }
    }
    panic!("the GLib side stopped before END:\n{text}");
}

/// Runs the GLib side over all files at once; `None` (with the reason) when
/// python3 or its GLib bindings are missing.
fn glib(files: &[Vec<u8>]) -> Result<Vec<Outcome>, String> {
    if !std::path::Path::new(PYTHON).exists() {
        return Err(format!("{PYTHON} is missing (package python3)"));
    }
    let probe = Command::new(PYTHON)
        .args([
            "-c",
            "import gi; gi.require_version('GLib', '2.0'); from gi.repository import GLib",
        ])
        .output()
        .map_err(|e| format!("running {PYTHON}: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "{PYTHON} cannot import gi's GLib (package python3-gi): {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    let mut child = Command::new(PYTHON)
        .args(["-c", GLIB_SIDE])
        // Translations are kept whatever the locale; keep it fixed anyway.
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {PYTHON}: {e}"))?;
    let mut input = String::new();
    for f in files {
        for b in f {
            input.push_str(&format!("{b:02x}"));
        }
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut out = String::new();
    let mut stdout = child.stdout.take().expect("piped");
    // The files are small: the whole run takes a second or two. A hung
    // interpreter fails the test instead of hanging it.
    let deadline = Instant::now() + Duration::from_secs(120);
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_string(&mut out);
        out
    });
    loop {
        if let Some(status) = child.try_wait().expect("waiting for python3") {
            let out = reader.join().expect("reader");
            let err = err_reader.join().expect("stderr reader");
            assert!(status.success(), "the GLib side failed: {status}\n{err}");
            writer.join().expect("writer").expect("writing to python3");
            return Ok(read_glib_answers(&out));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the GLib side did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// splitmix64: small, seeded, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const GROUPS: &[&str] = &[
    "Application",
    "Instance",
    "Context",
    "Session Bus Policy",
    "Environment",
    "a.b-c_d",
    "Grüße",
    "x#y",
    "G=1",
    "中文",
    "semi;colon",
    "trailing ",
    " leading",
    "back\\slash",
    "c1\u{85}ctl",
];
const BAD_GROUPS: &[&str] = &["", "a[b", "tab\tin", "ctl\u{1}", "del\u{7f}"];

const KEYS: &[&str] = &[
    "name",
    "Name",
    "instance-id",
    "app-path",
    "org.freedesktop.portal.*",
    "name[de_DE]",
    "name[sr@latin]",
    "name[de_DE.UTF-8@euro]",
    "name[]",
    "name\t[de]",
    "Encoding",
    "encoding",
    "Encoding[de]",
    "na me",
    "key#hash",
    "ctl\u{1}key",
    "日本",
    "ключ",
    "nb\u{a0}sp",
    "x-y.z",
];
const BAD_KEYS: &[&str] = &[
    "name[de",
    "name]x",
    "name [de]",
    "name[de]x",
    "name[de][fr]",
    "name[d e]",
    "[name]",
    "a[b]c",
    "name[ñ]",
    "name[中]",
];

const VALUES: &[&str] = &[
    "",
    "org.example.App",
    "plain value",
    "UTF-8",
    "utf-8",
    "Utf-8",
    "latin1",
    "a;b;c;",
    "a;b;c",
    ";",
    ";;",
    "a\\;b;",
    "\\s leading",
    "line\\nbreak",
    "tab\\there",
    "cr\\rhere",
    "back\\\\slash",
    "equals=inside",
    "#not a comment",
    "[not a group]",
    "ünïcödé 中文",
    "nb\u{a0}sp",
    "trailing space ",
    "trailing tab\t",
    "\u{a0}leading nbsp",
    "\u{b}leading vtab",
    "vt\u{b}inside",
    "ff\u{c}inside",
    "ctl\u{1}inside",
    "bad \\q escape",
    "bad \\x escape",
    "ends in \\",
    "\\;",
    "a\\;b",
    "\\\\;",
    "\\",
];

/// A key file of `lines` lines, made of likely and unlikely pieces.
fn generate(rng: &mut Rng) -> Vec<u8> {
    // Half the files only use what should parse, so that both sides accept
    // often enough to compare what they read.
    let clean = rng.chance(50);
    let mut out: Vec<u8> = Vec::new();
    if !clean && rng.chance(10) {
        out.extend_from_slice(
            rng.pick(&["k=v\n", "\u{feff}", "Encoding=UTF-8\n"])
                .as_bytes(),
        );
    }
    let lines = rng.below(14);
    for i in 0..lines {
        let mut line = String::new();
        if rng.chance(10) {
            line.push_str(rng.pick(&[" ", "\t", "  \t", "\u{c}", "\u{b}", "\u{a0}"]));
        }
        let roll = rng.below(100);
        if i == 0 || roll < 18 {
            let name = if !clean && rng.chance(15) {
                rng.pick(BAD_GROUPS)
            } else {
                rng.pick(GROUPS)
            };
            line.push('[');
            line.push_str(name);
            line.push(']');
            if rng.chance(10) {
                line.push_str(rng.pick(&[" ", "\t", " \t ", "\u{c}", " x", "]"]));
            }
        } else if roll < 26 {
            line.push_str(rng.pick(&["# comment", "#", "# [G] k=v", "#\\q"]));
        } else if roll < 32 {
            // blank
        } else if !clean && roll < 38 {
            line.push_str(rng.pick(&["junk", "=value", "[", "]", ";comment", "[G", "[G]x=y"]));
        } else {
            let key = if !clean && rng.chance(15) {
                rng.pick(BAD_KEYS)
            } else {
                rng.pick(KEYS)
            };
            line.push_str(key);
            line.push_str(rng.pick(&[
                "=", "=", "=", " = ", " =", "=  ", "\t=\t", "\u{c}=", "\u{b}=",
            ]));
            let mut value = rng.pick(VALUES).to_owned();
            if rng.chance(20) {
                value.push_str(rng.pick(VALUES));
            }
            if rng.chance(2) {
                value = value.repeat(2000 / (value.len() + 1) + 1);
            }
            line.push_str(&value);
        }
        out.extend_from_slice(line.as_bytes());
        let last = i + 1 == lines;
        if !clean && rng.chance(8) {
            // A byte no UTF-8 text holds, or a NUL, somewhere in the line.
            let bad = [0xffu8, 0xc3, 0x80, 0xfe, 0x00][rng.below(5)];
            let at = rng.below(out.len() + 1);
            out.insert(at, bad);
        }
        if last && rng.chance(40) {
            // No newline at the end, perhaps a CR.
            if rng.chance(30) {
                out.push(b'\r');
            }
            break;
        }
        out.extend_from_slice(if rng.chance(15) { b"\r\n" } else { b"\n" });
    }
    out
}

/// Whether a difference is one of the deliberate ones the module comment
/// lists, given our error.
fn deliberate(data: &[u8], our_err: &KeyFileError, glib: &Outcome) -> bool {
    match our_err {
        KeyFileError::Nul { .. } => data.contains(&0),
        KeyFileError::NotUtf8 { .. } => std::str::from_utf8(data).is_err(),
        KeyFileError::BadKeyName { line } => {
            // GLib accepts a Unicode letter or digit in a locale suffix.
            let text = String::from_utf8_lossy(data);
            let l = text.split('\n').nth(line - 1).unwrap_or_default();
            let key = l.split('=').next().unwrap_or_default();
            matches!(glib, Outcome::Read(_))
                && key.split_once('[').is_some_and(|(_, loc)| !loc.is_ascii())
        }
        _ => false,
    }
}

#[test]
fn our_parse_matches_glib_keyfile() {
    let seed = std::env::var("KEYFILE_GLIB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f1a7_9a4c_1e01u64);
    let count = std::env::var("KEYFILE_GLIB_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000usize);
    let mut rng = Rng(seed);
    let files: Vec<Vec<u8>> = (0..count).map(|_| generate(&mut rng)).collect();
    let theirs = match glib(&files) {
        Ok(outcomes) => outcomes,
        Err(missing) => {
            porthole_tests::skipped(&format!("our_parse_matches_glib_keyfile: {missing}"));
            return;
        }
    };
    assert_eq!(theirs.len(), files.len(), "one answer per file");

    let mut mismatches = Vec::new();
    let (mut both_read, mut both_refused, mut deliberate_count) = (0, 0, 0);
    for (data, glib) in files.iter().zip(&theirs) {
        let (result, ours) = ours(data);
        match (&result, &ours == glib) {
            (_, true) => match ours {
                Outcome::Read(_) => both_read += 1,
                _ => both_refused += 1,
            },
            (Err(e), false) if deliberate(data, e, glib) => deliberate_count += 1,
            _ => mismatches.push(format!(
                "file {:?}\n  ours: {result:?} {ours:?}\n  GLib: {glib:?}",
                String::from_utf8_lossy(data)
            )),
        }
    }
    eprintln!(
        "{count} files (seed {seed:#x}): {both_read} read alike, {both_refused} refused by both, \
         {deliberate_count} refused by us only, on purpose, {} mismatches",
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} of {count} files read differently; the first ones:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The comparison means something only if both outcomes are common.
    assert!(both_read > count / 4, "only {both_read} files read by both");
    assert!(
        both_refused > count / 10,
        "only {both_refused} files refused by both"
    );
}

/// The deliberate differences, one file each, so that a change on either
/// side shows up here by name.
#[test]
fn deliberate_differences() {
    let cases: &[(&[u8], &str)] = &[
        (b"[G]\nk=a\0b\n", "NUL"),
        (b"[G]\nk=\xff\n", "not UTF-8"),
        ("[G]\nname[ñ]=x\n".as_bytes(), "locale beyond ASCII"),
    ];
    let theirs = match glib(&cases.iter().map(|(d, _)| d.to_vec()).collect::<Vec<_>>()) {
        Ok(outcomes) => outcomes,
        Err(missing) => {
            porthole_tests::skipped(&format!("deliberate_differences: {missing}"));
            return;
        }
    };
    for ((data, what), glib) in cases.iter().zip(&theirs) {
        assert!(
            !matches!(glib, Outcome::Rejected),
            "{what}: GLib now refuses it too; drop the difference"
        );
        let (result, _) = ours(data);
        let err = result.expect_err(what);
        assert!(deliberate(data, &err, glib), "{what}: {err:?}");
    }
}
