//! Webhook checks: each forge's signature, in constant time, and what a push says.
//!
//! | forge | header | check |
//! | --- | --- | --- |
//! | GitHub | `X-Hub-Signature-256: sha256=<hex>` | HMAC-SHA256 of the body under the secret |
//! | Gitea | `X-Gitea-Signature: <hex>` | HMAC-SHA256 of the body under the secret |
//! | GitLab | `X-Gitlab-Token: <secret>` | the secret itself |
//!
//! Delivery ids (`X-GitHub-Delivery`, `X-Gitea-Delivery`, `X-Gitlab-Event-UUID`) are
//! remembered (the last 4,096) so a replayed delivery is ignored.

use std::collections::{HashSet, VecDeque};

use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    GitLab,
    Gitea,
}

impl Forge {
    pub fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
            Forge::Gitea => "gitea",
        }
    }

    pub fn delivery_header(self) -> &'static str {
        match self {
            Forge::GitHub => "x-github-delivery",
            Forge::GitLab => "x-gitlab-event-uuid",
            Forge::Gitea => "x-gitea-delivery",
        }
    }

    pub fn event_header(self) -> &'static str {
        match self {
            Forge::GitHub => "x-github-event",
            Forge::GitLab => "x-gitlab-event",
            Forge::Gitea => "x-gitea-event",
        }
    }

    /// Whether the event header names a push.
    pub fn is_push(self, event: &str) -> bool {
        match self {
            Forge::GitHub | Forge::Gitea => event == "push",
            Forge::GitLab => event == "Push Hook",
        }
    }
}

/// Equal in time independent of where they differ (lengths are not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What can be checked of a delivery's signature header before its body arrives: that
/// it is there and well formed (GitLab's token is checked whole: it does not depend on
/// the body). The same refusals as [`verify`].
pub fn precheck(forge: Forge, secret: &[u8], header: Option<&str>) -> Result<(), &'static str> {
    let Some(header) = header else {
        return Err("the signature header is missing");
    };
    match forge {
        Forge::GitLab => verify(forge, secret, Some(header), b""),
        Forge::GitHub | Forge::Gitea => {
            let hex = match forge {
                Forge::GitHub => header
                    .strip_prefix("sha256=")
                    .ok_or("the signature is not `sha256=<hex>`")?,
                _ => header,
            };
            let given = hex_decode(hex).ok_or("the signature is not hexadecimal")?;
            // No body matches a MAC that is not SHA-256's 32 bytes.
            if given.len() != 32 {
                return Err("the signature does not match the body");
            }
            Ok(())
        }
    }
}

/// Check a delivery's signature header (`None`: the header is missing).
pub fn verify(
    forge: Forge,
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
) -> Result<(), &'static str> {
    let Some(header) = header else {
        return Err("the signature header is missing");
    };
    match forge {
        Forge::GitLab => {
            if constant_time_eq(header.trim().as_bytes(), secret) {
                Ok(())
            } else {
                Err("the token does not match")
            }
        }
        Forge::GitHub | Forge::Gitea => {
            let hex = match forge {
                Forge::GitHub => header
                    .strip_prefix("sha256=")
                    .ok_or("the signature is not `sha256=<hex>`")?,
                _ => header,
            };
            let given = hex_decode(hex).ok_or("the signature is not hexadecimal")?;
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret).map_err(|_| "the secret is unusable")?;
            mac.update(body);
            // `verify_slice` compares in constant time.
            mac.verify_slice(&given)
                .map_err(|_| "the signature does not match the body")
        }
    }
}

/// GitHub's signature header value for `body` (for tests and tools).
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// What cacheflow reads from a push payload (all three forges use these names).
#[derive(Debug, serde::Deserialize)]
pub struct Push {
    #[serde(rename = "ref")]
    pub git_ref: String,
    #[serde(default)]
    pub after: Option<String>,
}

/// The last delivery ids seen.
#[derive(Default)]
pub struct Deliveries {
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl Deliveries {
    const KEEP: usize = 4096;

    /// True the first time `id` is seen.
    pub fn first(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        self.seen.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        if self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_header_is_checked_before_the_body_as_far_as_it_can_be() {
        let sig = github_signature(b"s3cret", b"any body");
        assert_eq!(precheck(Forge::GitHub, b"s3cret", Some(&sig)), Ok(()));
        // The HMAC itself needs the body.
        assert_eq!(precheck(Forge::GitHub, b"other", Some(&sig)), Ok(()));
        assert_eq!(
            precheck(Forge::GitHub, b"s3cret", None),
            Err("the signature header is missing")
        );
        assert_eq!(
            precheck(Forge::GitHub, b"s3cret", Some("sha1=abc")),
            Err("the signature is not `sha256=<hex>`")
        );
        assert_eq!(
            precheck(Forge::Gitea, b"s3cret", Some("zz")),
            Err("the signature is not hexadecimal")
        );
        assert_eq!(
            precheck(Forge::Gitea, b"s3cret", Some("abcd")),
            Err("the signature does not match the body")
        );
        assert_eq!(precheck(Forge::GitLab, b"s3cret", Some("s3cret")), Ok(()));
        assert_eq!(
            precheck(Forge::GitLab, b"s3cret", Some("guess")),
            Err("the token does not match")
        );
    }

    #[test]
    fn github_signatures_check_the_body() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = github_signature(b"s3cret", body);
        assert_eq!(verify(Forge::GitHub, b"s3cret", Some(&sig), body), Ok(()));
        assert_eq!(
            verify(Forge::GitHub, b"other", Some(&sig), body),
            Err("the signature does not match the body")
        );
        assert_eq!(
            verify(Forge::GitHub, b"s3cret", Some(&sig), b"{}"),
            Err("the signature does not match the body")
        );
        assert_eq!(
            verify(Forge::GitHub, b"s3cret", None, body),
            Err("the signature header is missing")
        );
        assert_eq!(
            verify(Forge::GitHub, b"s3cret", Some("sha1=abc"), body),
            Err("the signature is not `sha256=<hex>`")
        );
        // Gitea: the same HMAC, bare hex.
        let bare = sig.strip_prefix("sha256=").unwrap();
        assert_eq!(verify(Forge::Gitea, b"s3cret", Some(bare), body), Ok(()));
        assert_eq!(
            verify(Forge::Gitea, b"s3cret", Some("zz"), body),
            Err("the signature is not hexadecimal")
        );
    }

    #[test]
    fn gitlab_compares_the_token() {
        assert_eq!(verify(Forge::GitLab, b"tok", Some("tok"), b""), Ok(()));
        assert_eq!(
            verify(Forge::GitLab, b"tok", Some("tok2"), b""),
            Err("the token does not match")
        );
    }

    #[test]
    fn a_delivery_id_counts_once() {
        let mut d = Deliveries::default();
        assert!(d.first("a"));
        assert!(!d.first("a"));
        for i in 0..Deliveries::KEEP {
            d.first(&i.to_string());
        }
        assert!(d.first("a"), "forgotten after KEEP newer ones");
    }
}
