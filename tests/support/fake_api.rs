//! Pieces of a fake Kubernetes API server (a tower service standing in for what the test-bed's
//! API server does not serve: Secrets, Services, StatefulSets, Events, Leases).

use std::convert::Infallible;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use serde_json::{Value, json};

/// A response body: whole (JSON) or a watch that stays open.
pub type Body = StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// `v` as a JSON response with status `code`.
pub fn json_body(code: StatusCode, v: &Value) -> Response<Body> {
    let bytes = Bytes::from(serde_json::to_vec(v).unwrap());
    let body: BoxStream<'static, Result<Frame<Bytes>, Infallible>> =
        stream::iter([Ok(Frame::data(bytes))]).boxed();
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(StreamBody::new(body))
        .unwrap()
}

/// A watch that stays open and quiet, as a real one does between changes.
pub fn open_watch() -> Response<Body> {
    let body: BoxStream<'static, Result<Frame<Bytes>, Infallible>> = stream::pending().boxed();
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(StreamBody::new(body))
        .unwrap()
}

/// A failure `Status` object.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason, "message": message, "code": code})
}

/// One Lease, stored as a real API server does: every write bumps its resourceVersion, and a
/// replace carrying an older one (or a create of an existing one) is refused with 409 — the
/// compare-and-swap leader election relies on.
#[derive(Debug, Default)]
pub struct LeaseStore {
    lease: Option<Value>,
    version: u64,
}

impl LeaseStore {
    /// Answers a request on the Lease collection or the Lease (`GET`, `POST`, `PUT`).
    pub fn answer(&mut self, method: &str, named: bool, body: &Value) -> Response<Body> {
        let conflict =
            || json_body(StatusCode::CONFLICT, &status(409, "Conflict", "the object has been modified"));
        match (method, named) {
            ("GET", false) => json_body(
                StatusCode::OK,
                &json!({"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
                    "metadata": {"resourceVersion": self.version.to_string()},
                    "items": self.lease.iter().cloned().collect::<Vec<_>>()}),
            ),
            ("GET", true) => match &self.lease {
                Some(l) => json_body(StatusCode::OK, l),
                None => json_body(StatusCode::NOT_FOUND, &status(404, "NotFound", "leases not found")),
            },
            ("POST", false) if self.lease.is_some() => conflict(),
            ("PUT", true)
                if self.lease.as_ref().map(|l| &l["metadata"]["resourceVersion"])
                    != Some(&body["metadata"]["resourceVersion"]) =>
            {
                conflict()
            }
            ("POST", false) | ("PUT", true) => {
                self.version += 1;
                let mut stored = body.clone();
                stored["metadata"]["resourceVersion"] = json!(self.version.to_string());
                self.lease = Some(stored.clone());
                let code = if method == "POST" { StatusCode::CREATED } else { StatusCode::OK };
                json_body(code, &stored)
            }
            _ => json_body(StatusCode::METHOD_NOT_ALLOWED, &status(405, "MethodNotAllowed", method)),
        }
    }

    /// The Lease's holder now.
    pub fn holder(&self) -> Option<String> {
        self.lease.as_ref()?["spec"]["holderIdentity"].as_str().map(str::to_owned)
    }
}
