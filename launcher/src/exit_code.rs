//! Exit codes of `porthole`. The app's own status is passed through
//! (128+N when it died of signal N); the launcher's failures use codes apps
//! rarely use, one per kind, as documented in `porthole run --help`.

/// Unknown option or malformed option value.
pub const USAGE: i32 = 121;
/// APP_ID is not a valid application id.
pub const INVALID_APP_ID: i32 = 122;
/// No COMMAND after APP_ID.
pub const MISSING_COMMAND: i32 = 123;
/// An --app-dir, --runtime or --filesystem path that cannot be read.
pub const UNREADABLE_PATH: i32 = 124;
/// The sandbox could not be set up (the kernel refused a step).
pub const SETUP_FAILED: i32 = 125;
/// COMMAND exists in the sandbox but cannot be executed.
pub const COMMAND_NOT_EXECUTABLE: i32 = 126;
/// COMMAND not found in the sandbox.
pub const COMMAND_NOT_FOUND: i32 = 127;
/// `ps`/`kill`/`enter`: no such instance.
pub const NO_SUCH_INSTANCE: i32 = 120;
/// `porthole run APP_ID` without a command: the app is not installed.
pub const NOT_INSTALLED: i32 = 119;
/// The installed app's runtime is not installed.
pub const RUNTIME_MISSING: i32 = 118;
/// An installed app's metadata, override or deploy files are damaged.
pub const DAMAGED_METADATA: i32 = 117;
/// An app id, arch, branch or runtime ref that is not valid (`..`, `/`).
pub const BAD_REF: i32 = 116;
