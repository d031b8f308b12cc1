//! Plain request and response types of the KV API, mirroring etcd's
//! `etcdserverpb` messages without any protobuf or gRPC dependency.
//!
//! Response headers are reduced to the one field the store knows, the
//! `revision`; the caller adds cluster id, member id and Raft term.

use super::kv::KeyValue;

/// Order of a range's results (etcd's `RangeRequest.SortOrder`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum SortOrder {
    /// Key order, unless a non-key sort target is given (then ascending).
    #[default]
    None = 0,
    Ascend = 1,
    Descend = 2,
}

impl TryFrom<i32> for SortOrder {
    type Error = i32;
    fn try_from(v: i32) -> Result<Self, i32> {
        match v {
            0 => Ok(SortOrder::None),
            1 => Ok(SortOrder::Ascend),
            2 => Ok(SortOrder::Descend),
            other => Err(other),
        }
    }
}

/// Field a range's results are sorted by (etcd's `RangeRequest.SortTarget`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum SortTarget {
    #[default]
    Key = 0,
    Version = 1,
    Create = 2,
    Mod = 3,
    Value = 4,
}

impl TryFrom<i32> for SortTarget {
    type Error = i32;
    fn try_from(v: i32) -> Result<Self, i32> {
        match v {
            0 => Ok(SortTarget::Key),
            1 => Ok(SortTarget::Version),
            2 => Ok(SortTarget::Create),
            3 => Ok(SortTarget::Mod),
            4 => Ok(SortTarget::Value),
            other => Err(other),
        }
    }
}

/// etcd's `RangeRequest`. See `Store::range` for the semantics of each field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    /// Empty: just `key`. `[0]`: every key `>= key`. Otherwise `[key, range_end)`.
    pub range_end: Vec<u8>,
    /// At most this many kvs; `<= 0` means no limit.
    pub limit: i64,
    /// Read at this revision; `<= 0` means the current revision.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    /// Each of the four filters is off when 0.
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

/// etcd's `RangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// More kvs than `limit` matched (after filtering).
    pub more: bool,
    /// Number of keys in the range at the read revision, before the
    /// mod/create filters and before `limit`.
    pub count: i64,
    /// Header revision: the store's current revision (also for historical
    /// reads). Inside a txn that already wrote, the txn's new revision.
    pub revision: i64,
}

/// etcd's `PutRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    /// Keep the key's current value; the key must exist.
    pub ignore_value: bool,
    /// Keep the key's current lease; the key must exist.
    pub ignore_lease: bool,
}

/// etcd's `PutResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// The key-value before the put, if asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
    /// Header revision: the revision the put created.
    pub revision: i64,
}

/// etcd's `DeleteRangeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    /// Same rules as [`RangeRequest::range_end`].
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

/// etcd's `DeleteRangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
    /// Header revision: the new revision if anything was deleted (or, inside
    /// a txn, if the txn already wrote), else the current one.
    pub revision: i64,
}

/// etcd's `Compare.CompareResult`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum CompareResult {
    #[default]
    Equal = 0,
    Greater = 1,
    Less = 2,
    NotEqual = 3,
}

impl TryFrom<i32> for CompareResult {
    type Error = i32;
    fn try_from(v: i32) -> Result<Self, i32> {
        match v {
            0 => Ok(CompareResult::Equal),
            1 => Ok(CompareResult::Greater),
            2 => Ok(CompareResult::Less),
            3 => Ok(CompareResult::NotEqual),
            other => Err(other),
        }
    }
}

/// What a [`Compare`] looks at, with the operand it is compared against
/// (etcd's `Compare.target` together with its `target_union`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(i64),
}

/// etcd's `Compare`: `<key's target> <result> <operand>`, e.g. `version(k) == 0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    pub key: Vec<u8>,
    /// Same rules as [`RangeRequest::range_end`]; the compare must hold for
    /// every key in the range.
    pub range_end: Vec<u8>,
}

/// One operation of a txn branch (etcd's `RequestOp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

/// The response to one [`RequestOp`] (etcd's `ResponseOp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

/// etcd's `TxnRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

/// etcd's `TxnResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
    /// Header revision. For the outermost txn: the new revision if the txn
    /// changed anything, else the current one. For a txn nested inside
    /// another it is 0, because etcd v3.5 never fills nested txn headers.
    pub revision: i64,
}

/// etcd's `CompactionResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactResponse {
    /// Header revision: the current revision.
    pub revision: i64,
}
