//! Put keys as etcd's benchmark makes them: a buffer of `--key-size` bytes
//! whose start holds the key number as Go's `binary.PutVarint` writes it
//! (zig-zag, then LEB128), the rest zero bytes. The number is `i %
//! key-space-size` with `--sequential-keys`, else uniform in
//! `[0, key-space-size)`.
//!
//! One difference, on purpose: etcd reuses one buffer, so when a shorter
//! varint follows a longer one the old tail bytes stay (key 5 after key 300
//! is `[0x0a, 0x04, 0, ..]`). We zero the tail every time, so a key number
//! always maps to the same key. For the default key space (1) and for
//! sequential keys below 64 both give identical bytes.

/// Writes `n` as Go's `binary.PutVarint` (zig-zag + unsigned LEB128) into
/// `out`, returning the bytes written.
pub fn put_varint(out: &mut Vec<u8>, n: i64) -> usize {
    let mut ux = (n as u64) << 1;
    if n < 0 {
        ux = !ux;
    }
    let start = out.len();
    while ux >= 0x80 {
        out.push((ux as u8) | 0x80);
        ux >>= 7;
    }
    out.push(ux as u8);
    out.len() - start
}

/// Bytes `put_varint` needs for `n`.
pub fn varint_len(n: i64) -> usize {
    let mut v = Vec::with_capacity(10);
    put_varint(&mut v, n)
}

/// Refuses a key size too small for the largest key number (Go's
/// `PutVarint` would panic there).
pub fn check_key_size(key_size: usize, key_space_size: u64) -> Result<(), String> {
    let largest = i64::try_from(key_space_size.saturating_sub(1)).unwrap_or(i64::MAX);
    let need = varint_len(largest);
    if key_size < need {
        return Err(format!(
            "--key-size {key_size} cannot hold {key_space_size} distinct keys (needs at least {need} bytes)"
        ));
    }
    Ok(())
}

/// The key of number `n`, `key_size` bytes long.
pub fn key_bytes(n: u64, key_size: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(key_size.max(10));
    put_varint(&mut k, n as i64);
    k.resize(key_size.max(k.len()), 0);
    k
}

/// etcd's `GetPrefixRangeEnd`: the end of the range of every key that
/// starts with `prefix` (`\0`, every key, if there is no such end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// Chooses the key number of request `i`.
pub struct KeyGen {
    key_space_size: u64,
    sequential: bool,
    rng: fastrand::Rng,
}

impl KeyGen {
    pub fn new(key_space_size: u64, sequential: bool, seed: u64) -> KeyGen {
        KeyGen {
            key_space_size: key_space_size.max(1),
            sequential,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Key number for the `i`-th request of the run (0-based, global).
    pub fn key_number(&mut self, i: u64) -> u64 {
        if self.sequential {
            i % self.key_space_size
        } else {
            self.rng.u64(..self.key_space_size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_go_putvarint_padded_to_key_size() {
        // Values checked against Go: binary.PutVarint(buf, n).
        assert_eq!(key_bytes(0, 8), [0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(key_bytes(1, 8), [2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(key_bytes(63, 4), [126, 0, 0, 0]);
        assert_eq!(key_bytes(64, 4), [0x80, 0x01, 0, 0]);
        assert_eq!(key_bytes(300, 3), [0xd8, 0x04, 0]);
        let mut v = Vec::new();
        assert_eq!(put_varint(&mut v, -1), 1);
        assert_eq!(v, [1]);
        assert_eq!(varint_len(i64::MAX), 10);
    }

    #[test]
    fn sequential_keys_cycle_through_the_key_space() {
        let mut g = KeyGen::new(3, true, 1);
        let got: Vec<u64> = (0..7).map(|i| g.key_number(i)).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn random_keys_stay_within_and_cover_the_key_space() {
        let mut g = KeyGen::new(10, false, 42);
        let mut seen = [0u32; 10];
        for i in 0..10_000 {
            let n = g.key_number(i);
            assert!(n < 10);
            seen[n as usize] += 1;
        }
        // Uniform: each of 10 numbers about 1000 times.
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        // The default key space of 1 always gives key 0, as etcd.
        let mut one = KeyGen::new(1, false, 7);
        assert!((0..100).all(|i| one.key_number(i) == 0));
    }

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"mixed/"), b"mixed0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), [0]);
        assert_eq!(prefix_end(b""), [0]);
    }

    #[test]
    fn key_size_must_hold_the_largest_key_number() {
        assert!(check_key_size(8, 1).is_ok());
        assert!(check_key_size(1, 64).is_ok()); // 63 -> one byte
        assert!(check_key_size(1, 65).is_err()); // 64 -> two bytes
        assert!(check_key_size(8, 1 << 40).is_ok());
        assert!(check_key_size(0, 1).is_err());
    }
}
