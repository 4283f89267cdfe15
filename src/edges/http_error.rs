//! How an HTTP client error reads: one wording for the agent, notifications and the
//! forge client.

/// A reqwest error with its causes (`error sending request: connection refused`); the
/// agent, notifications and the forge client say it the same way.
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        format!("timed out: {e}")
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
