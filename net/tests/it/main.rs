//! Black-box tests of the client port: an in-process server (the same
//! `net::server::run` the ferrocd binary uses) driven over real sockets.

mod bad_input;
mod observe;
mod python_client;
mod support;
mod watch;
