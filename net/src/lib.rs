//! ferrocd's network layer: HTTP/2, our own gRPC layer, the etcd services and
//! the client used by the tools. Knows nothing of pages or fsync: it talks to
//! the cluster through `raftcore`.
// One audited exception: handing a socket2 listener to glommio (server.rs).
#![deny(unsafe_code)]

pub mod client;
pub mod cluster;
pub mod errors;
pub mod grpc;
pub mod http1;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod pb;
pub mod peer;
mod require_leader;
pub mod server;
pub mod shutdown;
pub mod v3election;
pub mod v3lock;
pub mod watch;
