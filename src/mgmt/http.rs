//! Routes, bearer-token authentication, and the unauthenticated endpoints
//! (`/health/live`, `/health/ready`, `/metrics`).
//!
//! Everything under `/api` goes through [`auth`] first, unknown paths
//! included: without a valid token a request gets 401 and learns nothing
//! else (not even whether the path exists).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use roost_actors::listener::ListenerMsg;
use roost_actors::overload::Evacuation;

use super::error::ApiError;
use super::types::Ready;
use super::{handlers as h, metrics, query, token, AppState};
use crate::node::DEFAULT_LISTENER;

/// Readiness answers within this, or says "not ready".
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/status", get(h::status))
        .route("/clients", get(h::clients))
        .route("/clients/{id}", get(h::client).delete(h::kick))
        .route("/subscriptions", get(h::subscriptions))
        .route("/routes", get(h::routes))
        .route("/retained", get(h::retained_list))
        .route(
            "/retained/{*topic}",
            get(h::retained_get).delete(h::retained_delete),
        )
        .route("/bridges", get(h::bridges))
        .route("/bridges/{name}", get(h::bridge))
        .route("/bridges/{name}/pause", post(h::bridge_pause))
        .route("/bridges/{name}/resume", post(h::bridge_resume))
        .route("/cluster", get(super::cluster::status))
        .route("/cluster/join", post(super::cluster::join))
        .route("/cluster/leave", post(super::cluster::leave))
        .route(
            "/cluster/members/{node}",
            axum::routing::delete(super::cluster::force_leave),
        )
        .route(
            "/evacuation",
            get(super::cluster::evacuation_status)
                .post(super::cluster::evacuation_start)
                .delete(super::cluster::evacuation_stop),
        )
        .route(
            "/rebalance",
            get(super::cluster::rebalance_status)
                .post(super::cluster::rebalance_start)
                .delete(super::cluster::rebalance_stop),
        )
        .route("/tree", get(h::tree))
        .route("/restart", post(h::restart))
        .route("/log/level", get(h::log_level).put(h::set_log_level));
    let api = Router::new()
        .nest("/v1", v1)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .nest("/api", api)
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(scrape))
        .fallback(not_found)
        .with_state(state)
}

/// `Authorization: Bearer <token>` (scheme case-insensitive, RFC 9110),
/// the token compared in constant time.
async fn auth(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match given {
        Some(t) if token::matches(&app.shared.token, t) => next.run(req).await,
        _ => {
            let mut resp =
                ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid bearer token")
                    .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// 200 while the process runs and serves HTTP.
async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "live": true }))
}

/// 200 when the default listener runs, the broker subtree is all running
/// and the store is open (its `storage` actor answers), and the node is not
/// being evacuated; 503 otherwise (load balancers stop sending new
/// connections).
async fn ready(State(app): State<AppState>) -> (StatusCode, Json<Ready>) {
    let timeout = READY_TIMEOUT.as_millis() as u64;
    let listener_alive = match app.shared.ctx.listener(DEFAULT_LISTENER) {
        Some(l) => ractor::call_t!(l, ListenerMsg::LocalAddr, timeout).is_ok(),
        None => false,
    };
    let storage = query::storage_stats(&app.shared.storage, timeout)
        .await
        .is_some();
    let tree = roost_actors::supervisor::tree_within(&app.root, READY_TIMEOUT).await;
    let (listener_running, broker) = match &tree {
        Ok(t) => (
            t.find(&format!("listeners/{DEFAULT_LISTENER}"))
                .is_some_and(query::all_running),
            t.find("broker").is_some_and(query::all_running),
        ),
        Err(_) => (false, false),
    };
    let listener = listener_alive && listener_running;
    let evacuating = app.shared.ctx.overload.evacuation() != Evacuation::Off;
    let body = Ready {
        ready: listener && broker && storage && !evacuating,
        listener,
        broker,
        storage,
        evacuating,
    };
    let status = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn scrape(State(app): State<AppState>) -> Response {
    let text = metrics::encode_snapshot(&metrics::snapshot(&app).await);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}
