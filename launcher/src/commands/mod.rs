//! One module per subcommand.

pub mod enter;
pub mod kill;
pub mod ps;
pub mod run;
