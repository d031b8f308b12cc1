//! ferrocd binaries' support code: the server's configuration front end
//! (etcd-compatible flags, environment, config file), logging and systemd
//! readiness notification.

pub mod config;
pub mod flags;
pub mod logging;
pub mod notify;
