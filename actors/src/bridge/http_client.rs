//! The HTTP sink's client: one kept-alive HTTP/1.1 connection over hyper's
//! low-level connection API, one request at a time (the bridge sends in
//! order), every exchange bounded by `request_timeout`. Plain HTTP only.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::AbortOnDrop;

/// An answer body larger than this is not read to its end: the connection
/// is dropped instead of kept (the sink's answer is not used).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Where requests go, parsed once from the bridge's URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `host:port`, resolved again on every connect.
    pub addr: String,
    /// The `Host` header.
    pub host: HeaderValue,
    pub path: Uri,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Target {
    /// `url` must be `http://host[:port][/path][?query]`.
    pub(crate) fn parse(url: &str, headers: &[(String, String)]) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("only http:// URLs are supported, got {url:?}"));
        }
        let auth = uri
            .authority()
            .ok_or_else(|| format!("no host in {url:?}"))?;
        let port = auth.port_u16().unwrap_or(80);
        let addr = format!("{}:{port}", auth.host());
        let host = HeaderValue::from_str(auth.as_str()).map_err(|e| e.to_string())?;
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e| format!("bad path in {url:?}: {e}"))?;
        let headers = headers
            .iter()
            .map(|(k, v)| {
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|e| format!("bad header name {k:?}: {e}"))?;
                let value =
                    HeaderValue::from_str(v).map_err(|e| format!("bad value of {k:?}: {e}"))?;
                Ok((name, value))
            })
            .collect::<Result<_, String>>()?;
        Ok(Target {
            addr,
            host,
            path,
            headers,
        })
    }
}

/// A connection: the request half, and the task driving the socket
/// (aborted with it, so a hung peer does not keep a task alive).
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    _driver: AbortOnDrop,
}

/// What one exchange came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Connected, nothing sent (a health check).
    Connected,
    /// The sink answered with this status.
    Status(u16),
    /// No connection (resolve, TCP or handshake failed).
    ConnectFailed(String),
    /// The connection failed during the exchange.
    Failed(String),
    /// No answer within `request_timeout`.
    TimedOut,
}

/// Connect if `conn` is absent or closed, then POST `body` (if any) and
/// read the whole answer; all within `timeout`. Returns the connection when
/// it can be used again.
pub(crate) async fn exchange(
    conn: Option<Conn>,
    target: &Target,
    body: Option<Bytes>,
    timeout: Duration,
) -> (Option<Conn>, Outcome) {
    match tokio::time::timeout(timeout, exchange_inner(conn, target, body)).await {
        Ok(r) => r,
        Err(_) => (None, Outcome::TimedOut),
    }
}

async fn exchange_inner(
    conn: Option<Conn>,
    target: &Target,
    body: Option<Bytes>,
) -> (Option<Conn>, Outcome) {
    let reused = conn.as_ref().is_some_and(|c| !c.sender.is_closed());
    let conn = match conn.filter(|c| !c.sender.is_closed()) {
        Some(c) => c,
        None => match connect(target).await {
            Ok(c) => c,
            Err(e) => return (None, Outcome::ConnectFailed(e)),
        },
    };
    let Some(body) = body else {
        return (Some(conn), Outcome::Connected);
    };
    match post(conn, target, body.clone()).await {
        // A kept-alive connection the sink closed meanwhile: once more on
        // a fresh one (the request may have been received: at least once).
        (None, Outcome::Failed(_)) if reused => match connect(target).await {
            Ok(c) => post(c, target, body).await,
            Err(e) => (None, Outcome::ConnectFailed(e)),
        },
        r => r,
    }
}

async fn connect(target: &Target) -> Result<Conn, String> {
    let stream = TcpStream::connect(&target.addr)
        .await
        .map_err(|e| format!("connect to {}: {e}", target.addr))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {}: {e}", target.addr))?;
    let driver = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    Ok(Conn {
        sender,
        _driver: driver,
    })
}

async fn post(mut conn: Conn, target: &Target, body: Bytes) -> (Option<Conn>, Outcome) {
    if let Err(e) = conn.sender.ready().await {
        return (None, Outcome::Failed(e.to_string()));
    }
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = target.path.clone();
    let h = req.headers_mut();
    h.insert(HOST, target.host.clone());
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (k, v) in &target.headers {
        h.insert(k.clone(), v.clone());
    }
    let resp = match conn.sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return (None, Outcome::Failed(e.to_string())),
    };
    let status = resp.status().as_u16();
    // Read the answer to its end, discarding it, so the connection can
    // carry the next request.
    let mut body = resp.into_body();
    let mut read = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                read += f.data_ref().map_or(0, |d| d.len());
                if read > MAX_ANSWER_BYTES {
                    return (None, Outcome::Status(status));
                }
            }
            Err(_) => return (None, Outcome::Status(status)),
        }
    }
    (Some(conn), Outcome::Status(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_urls_are_refused() {
        let t = Target::parse(
            "http://127.0.0.1:8080/hook?x=1",
            &[("x-token".into(), "abc".into())],
        )
        .unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080");
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.path, "/hook?x=1");
        assert_eq!(t.headers.len(), 1);
        let t = Target::parse("http://sink.example", &[]).unwrap();
        assert_eq!(
            (t.addr.as_str(), t.path.to_string()),
            ("sink.example:80", "/".into())
        );
        for bad in ["https://x/", "ftp://x/", "x:80", "http:///p", "not a url"] {
            assert!(Target::parse(bad, &[]).is_err(), "{bad}");
        }
        assert!(Target::parse("http://x/", &[("bad name".into(), "v".into())]).is_err());
        assert!(Target::parse("http://x/", &[("k".into(), "a\nb".into())]).is_err());
    }
}
