//! The binary's one tracing setup: events at or above the level from
//! `--log-level`, or from `RUST_LOG` (`LEVEL` or `target=LEVEL,...`, the
//! longest matching target prefix wins), go to stderr, one line per event:
//! `LEVEL target: message key=value ...`.
//!
//! Not tracing-subscriber: its registry allocates and zeroes a 32 KiB shard
//! table on every start and its formatting layer adds about 100 KiB of
//! code, and `porthole run`'s start-up time and peak RSS are measured
//! against bubblewrap's (launcher/bench). The launcher records events only,
//! never spans, so a subscriber that prints events is all it needs.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Which events are printed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Filter {
    default: LevelFilter,
    /// (target prefix, level), from `RUST_LOG`.
    targets: Vec<(String, LevelFilter)>,
}

impl Filter {
    /// `LEVEL` or `target=LEVEL`, comma-separated; `None` if any directive
    /// is malformed.
    fn parse(spec: &str, default: LevelFilter) -> Option<Self> {
        let mut f = Filter {
            default,
            targets: Vec::new(),
        };
        for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once('=') {
                Some((target, level)) => f.targets.push((target.to_owned(), level.parse().ok()?)),
                None => f.default = directive.parse().ok()?,
            }
        }
        Some(f)
    }

    fn level_for(&self, target: &str) -> LevelFilter {
        self.targets
            .iter()
            .filter(|(prefix, _)| target.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(self.default, |(_, level)| *level)
    }

    fn max(&self) -> LevelFilter {
        self.targets
            .iter()
            .map(|(_, level)| *level)
            .fold(self.default, std::cmp::max)
    }
}

/// Prints enabled events to stderr.
struct Stderr {
    filter: Filter,
}

/// Appends an event's fields: the message as is, the others as ` key=value`.
struct Line<'a>(&'a mut String);

impl Visit for Line<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = if field.name() == "message" {
            write!(self.0, "{value:?}")
        } else {
            write!(self.0, " {}={value:?}", field.name())
        };
    }
}

impl Subscriber for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.filter.level_for(metadata.target())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.filter.max())
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut line = String::new();
        let _ = write!(line, "{:>5} {}: ", meta.level(), meta.target());
        event.record(&mut Line(&mut line));
        line.push('\n');
        // One write, so that lines of our processes do not interleave.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Installs the subscriber: `RUST_LOG` when set and well-formed, otherwise
/// `level` (`warn` when that does not parse either).
pub fn init(level: &str) {
    let default = level.parse().unwrap_or(LevelFilter::WARN);
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| Filter::parse(&spec, default))
        .unwrap_or(Filter {
            default,
            targets: Vec::new(),
        });
    let _ = tracing::subscriber::set_global_default(Stderr { filter });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_directives() {
        let f = Filter::parse("info,porthole_launcher::cgroup=debug", LevelFilter::WARN).unwrap();
        assert_eq!(f.level_for("porthole"), LevelFilter::INFO);
        assert_eq!(f.level_for("porthole_launcher::cgroup"), LevelFilter::DEBUG);
        assert_eq!(f.max(), LevelFilter::DEBUG);
        let f = Filter::parse("porthole_launcher=off", LevelFilter::WARN).unwrap();
        assert_eq!(f.level_for("porthole_launcher::launch"), LevelFilter::OFF);
        assert_eq!(f.level_for("porthole"), LevelFilter::WARN);
        assert!(Filter::parse("loud", LevelFilter::WARN).is_none());
        assert!(Filter::parse("a=loud", LevelFilter::WARN).is_none());
    }
}
