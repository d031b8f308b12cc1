//! The stored key-value record and the change events derived from history.

/// One version of a key, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyValue {
    pub key: Vec<u8>,
    /// Revision of the put that created the key's current generation.
    pub create_revision: i64,
    /// Revision of the last change to the key.
    pub mod_revision: i64,
    /// Number of puts in the key's current generation (1 after creation).
    pub version: i64,
    pub value: Vec<u8>,
    /// Lease the key is attached to; 0 for none.
    pub lease: i64,
}

/// What an [`Event`] did to its key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EventKind {
    #[default]
    Put,
    Delete,
}

impl EventKind {
    /// etcd's `mvccpb.Event_EventType` number (PUT = 0, DELETE = 1).
    pub fn as_i32(self) -> i32 {
        match self {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        }
    }
}

/// One change from the store's history, as a watcher sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For a put: the key-value as written. For a delete: only `key` and
    /// `mod_revision` (the deleting revision) are set, as in etcd.
    pub kv: KeyValue,
    /// The key-value as of the revision before this event's main revision,
    /// if the key existed then and that revision is not compacted.
    pub prev_kv: Option<KeyValue>,
}
