//! One module per `ukdb` subcommand, each with its clap arguments and `run()`.

pub mod bridge;
pub mod core;
pub mod run;
