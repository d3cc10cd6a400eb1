//! `roost ctl`'s HTTP client for the management API.
//!
//! ureq (blocking, default features off: plain HTTP, no TLS, no gzip): a
//! CLI makes one request and exits, so an async runtime and hyper's client
//! stack would only add build time and binary size. Proxies from the
//! environment are ignored: the API is normally on loopback, and a proxy
//! would see the bearer token.

use std::time::Duration;

use ureq::http::Response;
use ureq::Body;

use crate::mgmt::types::ErrorBody;

/// Whole-request timeout: the API answers from live state within seconds.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response read (a list of every client of a big node).
const MAX_BODY: u64 = 1 << 30;

/// A failed operation: printed as `roost ctl: <message>`, exit code 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlError(pub String);

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CtlError {}

pub struct Client {
    agent: ureq::Agent,
    /// e.g. `http://127.0.0.1:18083`, no trailing `/`.
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Client {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .proxy(None)
            .build();
        Client {
            agent: config.into(),
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    pub fn get(&self, path: &str) -> Result<String, CtlError> {
        let req = self.agent.get(self.url(path));
        let req = match &self.token {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        };
        self.finish(req.call())
    }

    pub fn delete(&self, path: &str) -> Result<String, CtlError> {
        let req = self.agent.delete(self.url(path));
        let req = match &self.token {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        };
        self.finish(req.call())
    }

    /// `POST` (or `PUT`, with `put`) of a JSON body.
    pub fn send_json(
        &self,
        put: bool,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<String, CtlError> {
        let url = self.url(path);
        let req = if put {
            self.agent.put(url)
        } else {
            self.agent.post(url)
        };
        let req = req.header("content-type", "application/json");
        let req = match &self.token {
            Some(t) => req.header("authorization", format!("Bearer {t}")),
            None => req,
        };
        self.finish(req.send(body.to_string()))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn finish(&self, resp: Result<Response<Body>, ureq::Error>) -> Result<String, CtlError> {
        let mut resp = resp.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| CtlError(format!("cannot read the answer of {}: {e}", self.base)))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let message = serde_json::from_str::<ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| body.trim().to_owned());
        Err(CtlError(match status {
            401 => format!(
                "the node at {} rejected the token (HTTP 401): pass --token, set ROOST_TOKEN, or --data-dir DIR of that node",
                self.base
            ),
            _ => format!("{message} (HTTP {status})"),
        }))
    }

    fn transport_error(&self, e: ureq::Error) -> CtlError {
        let why = match &e {
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                "connection refused (is the node running, with its management API on this address?)"
                    .to_owned()
            }
            ureq::Error::Timeout(_) => format!("no answer within {}s", TIMEOUT.as_secs()),
            other => other.to_string(),
        };
        CtlError(format!("cannot reach the node at {}: {why}", self.base))
    }
}

/// Percent-encodes one path segment or query value (everything but RFC
/// 3986 unreserved characters), so `a/b` stays one segment: `a%2Fb`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(encode("sensors/kitchen/temp"), "sensors%2Fkitchen%2Ftemp");
        assert_eq!(encode("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(encode("$SYS/#"), "%24SYS%2F%23");
        assert_eq!(encode("é +"), "%C3%A9%20%2B");
        assert_eq!(encode(""), "");
    }

    #[test]
    fn connection_refused_names_the_url() {
        // A port nothing listens on: bind, take the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let err = Client::new(&base, None)
            .get("/health/live")
            .expect_err("nothing listens");
        assert!(err.0.contains(&base), "{err}");
        assert!(err.0.contains("connection refused"), "{err}");
    }
}
