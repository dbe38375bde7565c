//! One module per `ukdb` subcommand, each with its clap arguments and `run()`.

pub mod auth;
pub mod authclient;
pub mod bridge;
pub mod core;
pub mod inspect;
pub mod open;
pub mod run;
pub mod xenmodel;
