//! Request bodies of the routes anyone can reach (`/hooks/*`, node reports, admin
//! commands), read under three bounds, so that unauthenticated clients cannot hold the
//! server's memory:
//!
//! ```text
//! Content-Length over the route's limit ─► 413 at once (nothing read)
//! (the route's own checks of the headers: token, signature header ─► 401 at once)
//! bytes of every body being read ─► over the budget ─► 503 at once (Retry-After: 1)
//! the whole body within the time bound ─► else 408; a malformed (chunked) body ─► 400
//! ```
//!
//! A declared length is reserved from the budget before the first byte is read; a
//! chunked body reserves each chunk as it arrives. The reservation is returned when the
//! body has been read (or refused).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderMap};
use tokio::sync::Semaphore;

use super::error::ApiError;

/// The bytes all bodies being read may hold together (16 full-size webhooks).
pub const BODY_BUDGET_BYTES: usize = 16 << 20;
/// The time a whole body has to arrive, from its request's head.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The shared bounds of body reading.
#[derive(Debug, Clone)]
pub struct Bodies {
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    timeout: Duration,
}

impl Default for Bodies {
    fn default() -> Self {
        Bodies::new(BODY_BUDGET_BYTES, BODY_TIMEOUT)
    }
}

/// Bytes taken from the budget, given back on drop.
struct Reserved {
    budget: Arc<Semaphore>,
    bytes: usize,
}

impl Reserved {
    fn take(&mut self, bytes: usize, budget_bytes: usize) -> Result<(), ApiError> {
        let busy = ApiError::Busy {
            budget: budget_bytes,
        };
        let n = u32::try_from(bytes).map_err(|_| busy.clone())?;
        self.budget.try_acquire_many(n).map_err(|_| busy)?.forget();
        self.bytes += bytes;
        Ok(())
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget.add_permits(self.bytes);
    }
}

/// The body's declared length (`Content-Length`), if it has one that parses.
fn declared(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Bodies {
    pub fn new(budget_bytes: usize, timeout: Duration) -> Bodies {
        Bodies {
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            timeout,
        }
    }

    /// 413 when the request says its body is larger than `limit` (before reading it).
    pub fn check_declared(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
        match declared(headers) {
            Some(n) if n > limit as u64 => Err(ApiError::TooLarge { limit }),
            _ => Ok(()),
        }
    }

    /// Read a body of at most `limit` bytes, under the budget and the time bound.
    pub async fn read(
        &self,
        headers: &HeaderMap,
        body: Body,
        limit: usize,
    ) -> Result<Bytes, ApiError> {
        Bodies::check_declared(headers, limit)?;
        let mut reserved = Reserved {
            budget: self.budget.clone(),
            bytes: 0,
        };
        let length = declared(headers);
        if let Some(n) = length {
            reserved.take(n as usize, self.budget_bytes)?;
        }
        let reading = async {
            let mut body = std::pin::pin!(body);
            let mut bytes = Vec::with_capacity(length.unwrap_or(0) as usize);
            while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                let frame = frame
                    .map_err(|e| ApiError::BadRequest(format!("the body is malformed: {e}")))?;
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                if bytes.len() + data.len() > limit {
                    return Err(ApiError::TooLarge { limit });
                }
                if length.is_none() {
                    reserved.take(data.len(), self.budget_bytes)?;
                }
                bytes.extend_from_slice(&data);
            }
            Ok(Bytes::from(bytes))
        };
        tokio::time::timeout(self.timeout, reading)
            .await
            .map_err(|_| ApiError::BodyTimeout(self.timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(length: Option<usize>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(n) = length {
            h.insert(header::CONTENT_LENGTH, n.to_string().parse().unwrap());
        }
        h
    }

    #[tokio::test]
    async fn bodies_are_bounded_in_size_memory_and_time() {
        let bodies = Bodies::new(100, Duration::from_millis(200));
        let read = bodies
            .read(&headers(Some(5)), Body::from("hello"), 10)
            .await;
        assert_eq!(read.unwrap(), Bytes::from("hello"));
        // Declared too large: refused before anything is read.
        let too_large = bodies.read(&headers(Some(11)), Body::empty(), 10).await;
        assert_eq!(too_large, Err(ApiError::TooLarge { limit: 10 }));
        // Undeclared and too large.
        let too_large = bodies
            .read(&headers(None), Body::from("x".repeat(11)), 10)
            .await;
        assert_eq!(too_large, Err(ApiError::TooLarge { limit: 10 }));
        // A body that never ends holds its reservation until the time bound.
        let (_tx, stalled) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let stream = futures_stream(stalled);
        let waiting = {
            let bodies = bodies.clone();
            tokio::spawn(async move { bodies.read(&headers(Some(80)), stream, 100).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let busy = bodies
            .read(&headers(Some(30)), Body::from("y".repeat(30)), 100)
            .await;
        assert_eq!(busy, Err(ApiError::Busy { budget: 100 }));
        let timed_out = waiting.await.unwrap();
        assert_eq!(
            timed_out,
            Err(ApiError::BodyTimeout(Duration::from_millis(200)))
        );
        // Given back: the budget is whole again.
        let fits = bodies
            .read(&headers(Some(100)), Body::from("z".repeat(100)), 100)
            .await;
        assert!(fits.is_ok());
    }

    /// A body fed from a channel (a client that stalls while the sender is kept).
    fn futures_stream(rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Body {
        struct Channel(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);
        impl HttpBody for Channel {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
                self.0
                    .poll_recv(cx)
                    .map(|o| o.map(|r| r.map(http_body::Frame::data)))
            }
        }
        Body::new(Channel(rx))
    }
}
