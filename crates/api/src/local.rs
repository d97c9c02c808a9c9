//! The API served in-process to the admin socket: the CLI run as root on the node reaches
//! every route without a token and without TLS, through the very router the HTTPS listener
//! serves (same handlers, body limit, timeouts, counters and audit). The caller is recorded
//! as `admin-socket:uid=<uid>`.

use axum::body::Body;
use axum::http::{header, Method, Request};
use axum::Router;
use tower::ServiceExt;

use crate::auth::LocalCaller;
use crate::config::MAX_BODY_BYTES;

/// Largest answer relayed: the biggest route answer (a full policy document, a sysdump) is
/// bounded by the body limit plus its JSON envelope.
const MAX_ANSWER_BYTES: usize = 4 * MAX_BODY_BYTES;

/// A handle on the API's router for in-process requests. Cheap to clone.
#[derive(Clone)]
pub struct LocalApi {
    router: Router,
}

/// What a relayed request got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

impl LocalApi {
    pub(crate) fn new(router: Router) -> LocalApi {
        LocalApi { router }
    }

    /// Runs one request as root's admin caller. `path` is the request target
    /// (`/api/v1/policy?comment=x`); it must start with `/`.
    pub async fn call(&self, method: &str, path: &str, body: Option<String>, uid: u32) -> Result<LocalAnswer, String> {
        let method =
            Method::from_bytes(method.as_bytes()).map_err(|_| format!("method: {method:?} is not an HTTP method"))?;
        if !path.starts_with('/') {
            return Err(format!("path: must start with `/`, not {path:?}"));
        }
        let mut request = Request::builder().method(method).uri(path);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let mut request = request
            .body(body.map_or_else(Body::empty, Body::from))
            .map_err(|e| format!("path: {path:?} is not a request target: {e}"))?;
        request.extensions_mut().insert(LocalCaller { uid });
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status().as_u16();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        Ok(LocalAnswer { status, content_type, body: String::from_utf8_lossy(&bytes).into_owned() })
    }
}
