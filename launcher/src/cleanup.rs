//! A clean-up step that failed: logged with what and why, in one place.
//!
//! Clean-up runs once the result is decided (the launch's error, the app's
//! exit status), so its failures are reported beside that result, never
//! in its place (STYLE.md, Errors), and never silently dropped. One cold,
//! non-generic function rather than a tracing call site per step: each
//! site is code in `porthole`, whose size counts in its start-up time and
//! peak RSS (README, Performance).

/// Logs (warn) that the launcher could not `what` ("remove the instance
/// cgroup"), and why; `error` names the path where there is one.
#[cold]
#[inline(never)]
pub fn failed(what: &str, error: &dyn std::fmt::Display) {
    tracing::warn!(error = %error, "could not {what}");
}
