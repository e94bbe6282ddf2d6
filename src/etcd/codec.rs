//! How keys and values travel through the etcd gateway: base64 both ways, prefix
//! ranges, the transaction size limit. The only home of base64 in the crate.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// etcd's default `--max-txn-ops`: the most operations one transaction may carry.
pub use crate::store::MAX_TXN_OPS;

/// base64 of a key or value, as the gateway wants it.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}

/// The bytes of a base64 key or value from the gateway.
pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    B64.decode(text)
}

/// The etcd `range_end` that selects every key starting with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/s/"), b"/s0".to_vec());
        assert_eq!(prefix_end("a"), b"b".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn base64_round_trip() {
        assert_eq!(encode("/s/a"), "L3MvYQ==");
        assert_eq!(decode("L3MvYQ==").unwrap(), b"/s/a");
        assert!(decode("!").is_err());
    }
}
