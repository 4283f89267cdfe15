//! The access log: one record per HTTP request, target `cacheflow::access` at level
//! `info` (event `http_request`): the method, the route as the router matched it
//! (`/api/v1/nodes/{id}/report`: a pattern, never a node id, a query or a token), the
//! status, and the time to the answer's head in milliseconds.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Around every route: time the request and log it once answered.
pub(super) async fn log(request: Request, next: Next) -> Response {
    // With the access log filtered out (10,000 agents report every few seconds), a
    // request costs no more than this check.
    if !tracing::enabled!(target: "cacheflow::access", tracing::Level::INFO) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(no route)".to_owned(), |p| p.as_str().to_owned());
    let began = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let ms = began.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(
        target: "cacheflow::access",
        event = "http_request",
        method = method.as_str(),
        route = route.as_str(),
        status,
        ms,
        "{method} {route} {status} {ms:.1} ms"
    );
    response
}
