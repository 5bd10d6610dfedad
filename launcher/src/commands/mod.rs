//! One module per subcommand.

pub mod enter;
pub mod kill;
pub mod ps;
pub mod run;

use porthole_launcher::Warning;
use porthole_launcher::exit_code;
use porthole_launcher::instance::{self, InstanceError, Record};

/// This user's instance records directory.
fn instances() -> Result<std::path::PathBuf, InstanceError> {
    instance::runtime_dir(nix::unistd::getuid().as_raw(), &mut print_warning)
        .map(|r| instance::instances_path(&r))
}

/// How every command shows the library's warnings: one line on stderr.
fn print_warning(w: Warning) {
    eprintln!("porthole: {}: {w}", w.label());
}

/// The record of `id`, or the exit code after saying why there is none.
fn find(id: &str) -> Result<Record, i32> {
    instances()
        .and_then(|d| instance::find(&d, id))
        .map_err(|e| {
            eprintln!("porthole: {e}");
            exit_code::NO_SUCH_INSTANCE
        })
}
