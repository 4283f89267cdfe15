//! Node identity: the per-node token an agent presents, so that a node cannot report as
//! another node. The token is an HMAC-SHA256 of the node id under a secret only the
//! server knows, so the server needs no token database: it recomputes and compares in
//! constant time. `cacheflow agent-token ID` prints a node's token for its agent.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Tokens start with this version tag, so the derivation can change later.
const PREFIX: &str = "cf1.";
/// Domain separation: the same secret may key other MACs (webhooks) without collisions.
const CONTEXT: &[u8] = b"cacheflow node token v1\0";

/// The shortest secret accepted (bytes).
pub const MIN_SECRET_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the node-token secret is {0} bytes; use at least {MIN_SECRET_BYTES} random bytes")]
    SecretTooShort(usize),
    #[error("`{0}` is no node id a cluster can declare: lower-case letters, digits and dashes, 1 to 63 characters, starting and ending with a letter or digit")]
    NotANodeId(String),
}

/// Whether `id` is a name the config schema accepts as a node id (`$defs/name` of
/// schemas/cacheflow.schema.json: a DNS label).
pub fn is_node_id(id: &str) -> bool {
    let b = id.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| inner(c) || *c == b'-')
        && b.first().is_some_and(inner)
        && b.last().is_some_and(inner)
}

fn mac(secret: &[u8], node_id: &str) -> Result<Hmac<Sha256>, IdentityError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(IdentityError::SecretTooShort(secret.len()));
    }
    // HMAC takes keys of any length; the length check above is our own policy.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .map_err(|_| IdentityError::SecretTooShort(secret.len()))?;
    m.update(CONTEXT);
    m.update(node_id.as_bytes());
    Ok(m)
}

/// The token of `node_id` under `secret`: `cf1.` and 64 hex digits. An id no cluster
/// could declare has none (a token for it would only ever be refused).
pub fn node_token(secret: &[u8], node_id: &str) -> Result<String, IdentityError> {
    if !is_node_id(node_id) {
        let shown: String = node_id.chars().take(80).collect();
        return Err(IdentityError::NotANodeId(shown));
    }
    let tag = mac(secret, node_id)?.finalize().into_bytes();
    let mut out = String::with_capacity(PREFIX.len() + tag.len() * 2);
    out.push_str(PREFIX);
    for b in tag {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

/// Does `token` belong to `node_id`? Compared in constant time.
pub fn verify(secret: &[u8], node_id: &str, token: &str) -> bool {
    let Some(hex) = token.strip_prefix(PREFIX) else {
        return false;
    };
    let Some(bytes) = decode_hex(hex) else {
        return false;
    };
    match mac(secret, node_id) {
        Ok(m) => m.verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn only_ids_the_schema_accepts_get_a_token() {
        for ok in ["n1", "a", "sessions-eu-1a", &"x".repeat(63)] {
            assert!(is_node_id(ok), "{ok}");
        }
        for bad in [
            "",
            "N1",
            "-a",
            "a-",
            "a_b",
            "a.b",
            "a b",
            "é",
            &"x".repeat(64),
        ] {
            assert!(!is_node_id(bad), "{bad}");
            assert_eq!(
                node_token(SECRET, bad),
                Err(IdentityError::NotANodeId(bad.to_owned()))
            );
        }
    }

    #[test]
    fn a_token_verifies_for_its_node_only() {
        let t = node_token(SECRET, "sessions-eu-1a").unwrap();
        assert!(t.starts_with("cf1.") && t.len() == 4 + 64, "{t}");
        assert!(verify(SECRET, "sessions-eu-1a", &t));
        assert!(!verify(SECRET, "sessions-eu-1b", &t));
        assert!(!verify(
            b"another secret of enough length",
            "sessions-eu-1a",
            &t
        ));
    }

    #[test]
    fn tokens_are_stable_and_differ_per_node() {
        assert_eq!(
            node_token(SECRET, "a").unwrap(),
            node_token(SECRET, "a").unwrap()
        );
        assert_ne!(
            node_token(SECRET, "a").unwrap(),
            node_token(SECRET, "b").unwrap()
        );
        // A known answer (Python's hmac module) keeps the derivation from changing by
        // accident: agents in the field hold these tokens.
        assert_eq!(
            node_token(SECRET, "n1").unwrap(),
            "cf1.6e3272dea966a1f8bad7aa300c536df8d4c3e17a7780c5b618e38a7161c17528"
        );
    }

    #[test]
    fn malformed_tokens_and_short_secrets_are_refused() {
        let t = node_token(SECRET, "n1").unwrap();
        assert!(!verify(SECRET, "n1", &t[4..]));
        assert!(!verify(SECRET, "n1", "cf1.zz"));
        assert!(!verify(SECRET, "n1", &format!("{}0", t)));
        assert!(!verify(SECRET, "n1", ""));
        assert_eq!(
            node_token(b"short", "n1").unwrap_err(),
            IdentityError::SecretTooShort(5)
        );
    }
}
