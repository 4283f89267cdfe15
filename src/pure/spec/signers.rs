//! The shape of a signer in `trust.signers`: a syntax check made when the settings are
//! loaded (the signatures themselves are checked by `edges::trust`, which uses this
//! module's normal form of a fingerprint).

/// Check the shape of the listed keys when the settings are loaded: an SSH key that does
/// not parse, an OpenPGP fingerprint that is not 40 (v4) or 64 (v5/v6) hex digits.
pub fn check_signer_keys(ssh: Option<&str>, openpgp: Option<&str>) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if let Some(key) = ssh {
        if let Err(e) = ssh_key::PublicKey::from_openssh(key.trim()) {
            problems.push((
                "ssh",
                format!("not an SSH public key (`ssh-ed25519 AAAA...`): {e}"),
            ));
        }
    }
    if let Some(f) = openpgp {
        let n = normalise_fingerprint(f);
        if !(n.len() == 40 || n.len() == 64) || !n.chars().all(|c| c.is_ascii_hexdigit()) {
            problems.push((
                "openpgp",
                format!("`{f}` is not an OpenPGP fingerprint (40 or 64 hex digits; a short key id is not enough)"),
            ));
        }
    }
    if ssh.is_none() && openpgp.is_none() {
        problems.push((
            "name",
            "a signer needs an `ssh` key or an `openpgp` fingerprint".to_owned(),
        ));
    }
    problems
}

/// Upper-case hex without spaces: how fingerprints are compared.
pub fn normalise_fingerprint(f: &str) -> String {
    f.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_keys_are_checked_for_shape() {
        assert!(check_signer_keys(
            Some(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMmxPkC7TaFmK618+0oReIfzHRY19lj/QQ5mBhtGGzVv"
            ),
            Some("0123 4567 89AB CDEF 0123  4567 89ab cdef 0123 4567")
        )
        .is_empty());
        let p = check_signer_keys(Some("ssh-ed25519 nope"), Some("DEADBEEF"));
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, "ssh");
        assert!(p[1].1.contains("a short key id is not enough"));
        assert_eq!(check_signer_keys(None, None)[0].0, "name");
    }
}
