//! The one place where layer errors become etcd's gRPC statuses. Codes and
//! strings are etcd v3.5's (api/v3rpc/rpctypes/error.go); clients map the
//! strings back to typed errors, so they must match byte for byte.

use crate::grpc::{Code, Status};

fn s(code: Code, msg: &str) -> Status {
    Status::new(code, msg)
}

pub fn empty_key() -> Status {
    s(Code::INVALID_ARGUMENT, "etcdserver: key is not provided")
}
pub fn key_not_found() -> Status {
    s(Code::INVALID_ARGUMENT, "etcdserver: key not found")
}
pub fn value_provided() -> Status {
    s(Code::INVALID_ARGUMENT, "etcdserver: value is provided")
}
pub fn lease_provided() -> Status {
    s(Code::INVALID_ARGUMENT, "etcdserver: lease is provided")
}
pub fn too_many_ops() -> Status {
    s(
        Code::INVALID_ARGUMENT,
        "etcdserver: too many operations in txn request",
    )
}
pub fn duplicate_key() -> Status {
    s(
        Code::INVALID_ARGUMENT,
        "etcdserver: duplicate key given in txn request",
    )
}
pub fn compacted() -> Status {
    s(
        Code::OUT_OF_RANGE,
        "etcdserver: mvcc: required revision has been compacted",
    )
}
pub fn future_rev() -> Status {
    s(
        Code::OUT_OF_RANGE,
        "etcdserver: mvcc: required revision is a future revision",
    )
}
pub fn lease_not_found() -> Status {
    s(Code::NOT_FOUND, "etcdserver: requested lease not found")
}
pub fn lease_exist() -> Status {
    s(
        Code::FAILED_PRECONDITION,
        "etcdserver: lease already exists",
    )
}
pub fn lease_ttl_too_large() -> Status {
    s(Code::OUT_OF_RANGE, "etcdserver: too large lease TTL")
}
pub fn request_too_large() -> Status {
    s(Code::INVALID_ARGUMENT, "etcdserver: request is too large")
}
/// etcd's `ErrGRPCNoLeader`.
pub fn no_leader() -> Status {
    s(Code::UNAVAILABLE, "etcdserver: no leader")
}
/// etcd's ErrGRPCNotSupportedForLearner.
pub fn not_supported_for_learner() -> Status {
    s(
        Code::UNAVAILABLE,
        "etcdserver: rpc not supported for learner",
    )
}
pub fn no_space() -> Status {
    s(
        Code::RESOURCE_EXHAUSTED,
        "etcdserver: mvcc: database space exceeded",
    )
}
pub fn stopped() -> Status {
    s(Code::UNAVAILABLE, "etcdserver: server stopped")
}

/// Maps an apply-layer error to etcd's status.
pub fn status_of(e: &raftcore::Error) -> Status {
    use engine::mvcc::Error as M;
    match e {
        raftcore::Error::Mvcc(M::Compacted) => compacted(),
        raftcore::Error::Mvcc(M::FutureRevision) => future_rev(),
        raftcore::Error::Mvcc(M::KeyNotFound) => key_not_found(),
        raftcore::Error::LeaseNotFound | raftcore::Error::Mvcc(M::LeaseNotFound) => {
            lease_not_found()
        }
        raftcore::Error::LeaseExists => lease_exist(),
        raftcore::Error::LeaseTtlTooLarge => lease_ttl_too_large(),
        raftcore::Error::Stopped => stopped(),
        raftcore::Error::NoSpace => no_space(),
        raftcore::Error::Timeout => s(Code::UNAVAILABLE, "etcdserver: request timed out"),
        raftcore::Error::NoLeader => no_leader(),
        // etcd passes the context's error through untranslated: code Unknown.
        raftcore::Error::NotProposed => s(Code::UNKNOWN, "context deadline exceeded"),
        raftcore::Error::NotLeader => s(Code::FAILED_PRECONDITION, "etcdserver: not leader"),
        raftcore::Error::BadLeaderTransferee => s(
            Code::FAILED_PRECONDITION,
            "etcdserver: bad leader transferee",
        ),
        raftcore::Error::Member(m) => {
            use raftcore::membership::MemberError as E;
            let code = match m {
                E::NotFound => Code::NOT_FOUND,
                E::IdExists | E::PeerUrlExists | E::NotLearner | E::TooManyLearners => {
                    Code::FAILED_PRECONDITION
                }
            };
            s(code, &m.to_string())
        }
        raftcore::Error::LearnerNotReady | raftcore::Error::NotEnoughStarted => {
            s(Code::FAILED_PRECONDITION, &e.to_string())
        }
        raftcore::Error::Corrupt(_) => s(Code::DATA_LOSS, "etcdserver: corrupt cluster"),
        other => Status::new(Code::UNAVAILABLE, other.to_string()),
    }
}
