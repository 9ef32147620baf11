//! Carafe: files, mail, notifications and background jobs for any web application, served over
//! one HTTP API from one binary. This crate is the server and the CLI; domain types and store
//! traits live in `carafe-core`, the databases in `carafe-store-sqlite` and
//! `carafe-store-postgres`.

pub mod access;
pub mod api;
pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod context;
pub mod files;
pub mod group_commit;
pub mod jobs;
pub mod mail;
pub mod realtime;
pub mod secrets;
pub mod smtp;
pub mod telemetry;
pub mod values;

pub use app::App;
pub use config::Config;
