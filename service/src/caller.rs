//! Who is calling, as a type a service can match on.
//!
//! The bus names a call's sender; [`porthole_identity::CallerLookup`] turns
//! that into the process's instance info under a deadline. [`Callers`] adds
//! what every service needs around it: one lookup per sender however many
//! calls it sends, answers remembered per sender, and a typed result,
//! [`Caller`]. A caller that cannot be identified is [`Caller::Unidentified`]
//! and [`Caller::require`] turns it into `NotAllowed`: a service never makes
//! up an app id string for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use porthole_identity::{AppId, AppInfo, CallerError, CallerLookup};
use tokio::sync::oneshot;
use zbus::message::Header;

use crate::error::PortalError;

/// The process behind a D-Bus call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An unsandboxed process: upstream's empty app id.
    Host,
    /// A sandboxed app, named by the instance info it cannot write.
    App {
        app_id: AppId,
        instance_id: Option<String>,
        /// `network` in the app's `[Context] shared`.
        network: bool,
    },
    /// The lookup failed; `reason` is for our log, not for the reply.
    Unidentified {
        sender: Option<String>,
        reason: String,
    },
}

impl Caller {
    /// The caller, or `NotAllowed` when it could not be identified: the one
    /// answer a service gives to a call it cannot attribute.
    pub fn require(&self) -> Result<&Caller, PortalError> {
        match self {
            Caller::Unidentified { sender, reason } => {
                Err(refuse_unidentified(sender.as_deref(), reason))
            }
            known => Ok(known),
        }
    }

    /// Whether the caller may use the network (upstream's
    /// `xdp_app_info_has_network`): the host may; an app when its
    /// instance info shares `network`; an unidentified caller may not.
    pub fn has_network(&self) -> bool {
        match self {
            Caller::Host => true,
            Caller::App { network, .. } => *network,
            Caller::Unidentified { .. } => false,
        }
    }

    /// The app id, or None for the host (and for an unidentified caller).
    pub fn app_id(&self) -> Option<&AppId> {
        match self {
            Caller::App { app_id, .. } => Some(app_id),
            _ => None,
        }
    }

    /// Upstream's app id string: empty for the host, None when unidentified.
    pub fn app_id_str(&self) -> Option<&str> {
        match self {
            Caller::Host => Some(""),
            Caller::App { app_id, .. } => Some(app_id.as_str()),
            Caller::Unidentified { .. } => None,
        }
    }

    /// The typed answer for a lookup's result, and how long to remember it
    /// for this sender. A settled answer is kept (unique names are never
    /// reused). [`CallerError::Busy`] is forgotten at once: it says nothing
    /// about this caller, just that others' lookups are stuck. A lookup that
    /// timed out is kept for [`RETRY_AFTER_TIMEOUT`]: long enough that one
    /// sender cannot wedge a thread per call, short enough that a caller
    /// whose first lookup met a stalled machine is not refused for the life
    /// of its connection.
    fn from_lookup(sender: &str, found: Result<AppInfo, CallerError>) -> (Caller, Keep) {
        let unidentified = |reason: String| Caller::Unidentified {
            sender: Some(sender.to_owned()),
            reason,
        };
        match found {
            Ok(info) if info.is_host() => (Caller::Host, Keep::Always),
            Ok(info) => match AppId::parse(&info.app_id) {
                Ok(app_id) => (
                    Caller::App {
                        app_id,
                        instance_id: info.instance_id,
                        network: info.network,
                    },
                    Keep::Always,
                ),
                Err(e) => (
                    unidentified(format!("app id {:?}: {e}", info.app_id)),
                    Keep::Always,
                ),
            },
            Err(e @ CallerError::Busy(_)) => (unidentified(e.to_string()), Keep::Not),
            Err(e @ CallerError::TimedOut { .. }) => (
                unidentified(e.to_string()),
                Keep::Until(Instant::now() + RETRY_AFTER_TIMEOUT),
            ),
            Err(e) => (unidentified(e.to_string()), Keep::Always),
        }
    }
}

/// The reply to a call whose caller could not be identified: `NotAllowed`,
/// with the reason in our log only (it may name paths in the caller's root).
pub fn refuse_unidentified(sender: Option<&str>, reason: &str) -> PortalError {
    tracing::warn!(?sender, %reason, "refusing a call from an unidentified caller");
    PortalError::NotAllowed("The caller could not be identified".into())
}

/// How long a caller's identification may take. A write that needs the
/// caller waits at most this long for it.
pub const IDENTIFY_DEADLINE: Duration = Duration::from_secs(2);

/// Lookups allowed to hang at once; past that, new callers are answered as
/// unidentified at once instead of waiting for the deadline.
pub const IDENTIFY_MAX_STUCK: usize = 8;

/// How long a sender whose lookup timed out is answered as unidentified
/// before its next call is looked up again.
pub const RETRY_AFTER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a lookup's answer stands for its sender.
enum Keep {
    Always,
    Until(Instant),
    Not,
}

/// Remembered senders; past this the settled answers are dropped.
const CACHE_MAX: usize = 4096;

/// Per-sender caller identities for one service.
///
/// Unique names are never reused on a bus, so an answer can only go stale
/// by growing old; answers are dropped when the map is large.
pub struct Callers {
    map: Mutex<HashMap<String, Known>>,
    lookup: CallerLookup,
}

enum Known {
    /// The answer, and until when it stands (None: for good).
    Ready(Caller, Option<Instant>),
    /// One lookup per sender at a time, however many calls it sends: a
    /// sender whose lookup hangs costs one blocking thread, not one per call.
    Waiting(Vec<oneshot::Sender<Caller>>),
}

impl Default for Callers {
    fn default() -> Self {
        Self::new(IDENTIFY_MAX_STUCK, IDENTIFY_DEADLINE)
    }
}

impl Callers {
    pub fn new(max_stuck: usize, deadline: Duration) -> Self {
        Self {
            map: Mutex::default(),
            lookup: CallerLookup::new(max_stuck, deadline),
        }
    }

    /// The caller of the call with header `hdr`, or the promise of it.
    /// Never awaits, so a handler can queue its work first and keep the
    /// order of one client's calls (see [`PendingCaller`]).
    pub fn begin(self: &Arc<Self>, conn: &zbus::Connection, hdr: &Header<'_>) -> PendingCaller {
        let Some(sender) = hdr.sender().map(|s| s.to_string()) else {
            // Only a peer-to-peer connection delivers a call without a
            // sender: no bus stands behind it to tell us its process, and
            // the services never listen peer-to-peer. Refuse rather than
            // take it for the host.
            return PendingCaller::ready(Caller::Unidentified {
                sender: None,
                reason: "the call came without a sender (not through a bus)".into(),
            });
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut map = self.map.lock().expect("caller cache lock");
            match map.get_mut(&sender) {
                Some(Known::Ready(caller, until))
                    if until.is_none_or(|until| Instant::now() < until) =>
                {
                    return PendingCaller::ready(caller.clone());
                }
                Some(Known::Waiting(waiters)) => {
                    waiters.push(tx);
                    return PendingCaller::waiting(sender, rx);
                }
                // Not known, or a timed-out answer that has lapsed.
                _ => {}
            }
            if map.len() >= CACHE_MAX {
                map.retain(|_, known| matches!(known, Known::Waiting(_)));
            }
            map.insert(sender.clone(), Known::Waiting(vec![tx]));
        }
        let (callers, conn, asked) = (self.clone(), conn.clone(), sender.clone());
        tokio::spawn(async move {
            let found = callers.lookup.identify(&conn, &asked).await;
            if let Err(e) = &found {
                tracing::warn!(sender = %asked, "could not identify caller: {e}");
            }
            let (caller, keep) = Caller::from_lookup(&asked, found);
            let waiters = {
                let mut map = callers.map.lock().expect("caller cache lock");
                let previous = match keep {
                    Keep::Always => map.insert(asked, Known::Ready(caller.clone(), None)),
                    Keep::Until(until) => {
                        map.insert(asked, Known::Ready(caller.clone(), Some(until)))
                    }
                    Keep::Not => map.remove(&asked),
                };
                match previous {
                    Some(Known::Waiting(waiters)) => waiters,
                    _ => Vec::new(),
                }
            };
            for waiter in waiters {
                let _gone = waiter.send(caller.clone());
            }
        });
        PendingCaller::waiting(sender, rx)
    }

    /// The caller of the call with header `hdr`, awaiting its lookup.
    pub async fn identify(self: &Arc<Self>, conn: &zbus::Connection, hdr: &Header<'_>) -> Caller {
        self.begin(conn, hdr).resolve().await
    }
}

/// A caller known now or once its lookup ends (within the deadline the
/// [`Callers`] were made with).
#[derive(Debug)]
pub struct PendingCaller(Pending);

#[derive(Debug)]
enum Pending {
    Ready(Caller),
    Waiting {
        sender: String,
        rx: oneshot::Receiver<Caller>,
    },
}

impl PendingCaller {
    pub fn ready(caller: Caller) -> Self {
        Self(Pending::Ready(caller))
    }

    fn waiting(sender: String, rx: oneshot::Receiver<Caller>) -> Self {
        Self(Pending::Waiting { sender, rx })
    }

    pub async fn resolve(self) -> Caller {
        match self.0 {
            Pending::Ready(caller) => caller,
            Pending::Waiting { sender, rx } => rx.await.unwrap_or(Caller::Unidentified {
                sender: Some(sender),
                reason: "the lookup was abandoned".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(app_id: &str) -> AppInfo {
        AppInfo {
            app_id: app_id.into(),
            instance_id: Some("7".into()),
            network: false,
            pid: 1,
        }
    }

    #[test]
    fn lookups_become_typed_callers() {
        let (host, keep) = Caller::from_lookup(":1.5", Ok(info("")));
        assert_eq!(host, Caller::Host);
        assert!(matches!(keep, Keep::Always));
        let (app, keep) = Caller::from_lookup(":1.5", Ok(info("org.example.App")));
        assert!(matches!(keep, Keep::Always));
        assert_eq!(app.app_id().map(AppId::as_str), Some("org.example.App"));
        assert_eq!(app.app_id_str(), Some("org.example.App"));
        assert!(!app.has_network());
        let (networked, _) = Caller::from_lookup(
            ":1.5",
            Ok(AppInfo {
                network: true,
                ..info("org.example.App")
            }),
        );
        assert!(networked.has_network());
        assert_eq!(Caller::Host.app_id_str(), Some(""));
        assert!(Caller::Host.has_network());
    }

    #[test]
    fn a_failed_lookup_is_unidentified_busy_is_not_remembered_a_timeout_lapses() {
        let (gone, keep) = Caller::from_lookup(":1.5", Err(CallerError::Gone(9)));
        assert!(matches!(keep, Keep::Always));
        assert!(matches!(&gone, Caller::Unidentified { sender: Some(s), .. } if s == ":1.5"));
        assert_eq!(gone.app_id_str(), None);
        let (_, keep) = Caller::from_lookup(":1.5", Err(CallerError::Busy(IDENTIFY_DEADLINE)));
        assert!(matches!(keep, Keep::Not));
        let timed_out = CallerError::TimedOut {
            pid: 9,
            after: IDENTIFY_DEADLINE,
        };
        let (caller, keep) = Caller::from_lookup(":1.5", Err(timed_out));
        assert!(matches!(caller, Caller::Unidentified { .. }));
        let Keep::Until(until) = keep else {
            panic!("a timed-out lookup must lapse");
        };
        let left = until - Instant::now();
        assert!(left <= RETRY_AFTER_TIMEOUT && left > RETRY_AFTER_TIMEOUT / 2);
    }

    #[test]
    fn an_invalid_app_id_is_never_passed_on() {
        let (caller, _) = Caller::from_lookup(":1.5", Ok(info("not an id")));
        assert!(matches!(caller, Caller::Unidentified { .. }));
    }

    #[test]
    fn require_refuses_only_the_unidentified() {
        use zbus::DBusError;
        assert!(Caller::Host.require().is_ok());
        let err = Caller::Unidentified {
            sender: None,
            reason: "x".into(),
        }
        .require()
        .unwrap_err();
        assert_eq!(
            err.name().as_str(),
            "org.freedesktop.portal.Error.NotAllowed"
        );
    }
}
