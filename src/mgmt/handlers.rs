//! The `/api/v1` handlers. Each one reads live state through
//! [`super::query`] or asks an actor, and answers JSON ([`super::types`]) or
//! an [`ApiError`].

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use roost_actors::supervisor::SupervisorError;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::ApiError;
use super::log::LogError;
use super::types::{
    BridgeDetail, BridgeSummary, ClientDetail, ClientSummary, Deleted, Kicked, List, LogLevel,
    RestartRequest, Restarted, RetainedMessage, RetainedSummary, RouteEntry, Status,
    SubscriptionEntry, TreeEntry,
};
use super::{query, AppState};

type ApiResult<T> = Result<Json<T>, ApiError>;

pub async fn status(State(app): State<AppState>) -> ApiResult<Status> {
    let ctx = &app.shared.ctx;
    let listeners = query::listeners(ctx).await;
    let sessions = query::sessions(ctx).await?;
    let (sessions_online, sessions_offline) = query::online_offline(&sessions);
    Ok(Json(Status {
        node: app.shared.node_name.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_secs: app.shared.started.elapsed().as_secs(),
        connections: listeners.iter().map(|l| l.connections).sum(),
        listeners,
        sessions_online,
        sessions_offline,
        subscriptions: ctx.routes.subscription_count() as u64,
        routes: ctx.routes.route_count() as u64,
        retained: ctx.retained.len() as u64,
    }))
}

#[derive(Debug, Deserialize)]
pub struct ClientsQuery {
    /// Substring of the client id.
    #[serde(rename = "match")]
    pattern: Option<String>,
    /// Only the sessions on this node (a member's name).
    node: Option<String>,
}

/// The sessions of the whole cluster (every up member), or of one node,
/// each with the node that holds it.
pub async fn clients(
    State(app): State<AppState>,
    Query(q): Query<ClientsQuery>,
) -> ApiResult<List<ClientSummary>> {
    let me = app.shared.node_name.as_str();
    let wanted = |node: &str| q.node.as_deref().is_none_or(|n| n == node);
    let mut data = Vec::new();
    if wanted(me) {
        let sessions = query::sessions(&app.shared.ctx).await?;
        data.extend(
            sessions
                .iter()
                .filter(|s| {
                    q.pattern
                        .as_deref()
                        .is_none_or(|p| s.client_id.as_str().contains(p))
                })
                .map(|s| query::client_summary(me, s)),
        );
    }
    if let Some(cluster) = &app.shared.cluster {
        if q.node.as_deref() != Some(me) {
            let remote = cluster.remote_clients(q.pattern.clone()).await;
            if let Some(n) = &q.node {
                if !remote.clients.iter().any(|(node, _)| node == n) && remote.silent.contains(n) {
                    return Err(ApiError::unavailable(format!("node {n} did not answer")));
                }
            }
            data.extend(
                remote
                    .clients
                    .into_iter()
                    .filter(|(node, _)| wanted(node))
                    .map(|(node, c)| ClientSummary {
                        node,
                        client_id: c.client_id,
                        connected: c.connected,
                        subscriptions: c.subscriptions,
                        inflight: c.inflight,
                        queued: c.queued,
                    }),
            );
        }
    }
    Ok(Json(List { data }))
}

fn unknown_client(id: &str) -> ApiError {
    ApiError::not_found(format!("no client {id:?}"))
}

pub async fn client(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<ClientDetail> {
    match query::session(&app.shared.ctx, &id).await? {
        Some(info) => Ok(Json(query::client_detail(info))),
        None => Err(unknown_client(&id)),
    }
}

pub async fn kick(State(app): State<AppState>, Path(id): Path<String>) -> ApiResult<Kicked> {
    if query::kick(&app.shared.ctx, &id).await? {
        tracing::info!(client_id = %id, "client_kicked_by_admin");
        Ok(Json(Kicked { client_id: id }))
    } else {
        Err(unknown_client(&id))
    }
}

#[derive(Debug, Deserialize)]
pub struct SubscriptionsQuery {
    client: Option<String>,
}

pub async fn subscriptions(
    State(app): State<AppState>,
    Query(q): Query<SubscriptionsQuery>,
) -> ApiResult<List<SubscriptionEntry>> {
    let data = query::subscriptions(&app.shared.ctx, q.client.as_deref());
    Ok(Json(List { data }))
}

pub async fn routes(State(app): State<AppState>) -> ApiResult<List<RouteEntry>> {
    let data = query::routes(&app.shared.ctx, &app.shared.node_name);
    Ok(Json(List { data }))
}

pub async fn retained_list(State(app): State<AppState>) -> ApiResult<List<RetainedSummary>> {
    Ok(Json(List {
        data: query::retained(&app.shared.ctx),
    }))
}

fn no_retained(topic: &str) -> ApiError {
    ApiError::not_found(format!("no retained message on topic {topic:?}"))
}

pub async fn retained_get(
    State(app): State<AppState>,
    Path(topic): Path<String>,
) -> ApiResult<RetainedMessage> {
    match app.shared.ctx.retained.get(&topic) {
        Some(m) => Ok(Json(query::retained_message(&m))),
        None => Err(no_retained(&topic)),
    }
}

pub async fn retained_delete(
    State(app): State<AppState>,
    Path(topic): Path<String>,
) -> ApiResult<Deleted> {
    if app.shared.ctx.retained.delete(&topic) {
        tracing::info!(topic = %topic, "retained_deleted_by_admin");
        Ok(Json(Deleted { topic }))
    } else {
        Err(no_retained(&topic))
    }
}

pub async fn tree(State(app): State<AppState>) -> ApiResult<TreeEntry> {
    let tree = roost_actors::supervisor::tree(&app.root)
        .await
        .map_err(|e| ApiError::unavailable(format!("the supervision tree did not answer: {e}")))?;
    Ok(Json(query::tree_entry(tree)))
}

/// A JSON body, whatever its Content-Type says (`curl -d` sends a form type).
fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

pub async fn restart(State(app): State<AppState>, body: Bytes) -> ApiResult<Restarted> {
    let path = json_body::<RestartRequest>(&body)?
        .path
        .trim()
        .trim_matches('/')
        .to_owned();
    // Session actors are the registry's children, not a supervisor's:
    // `sessions/<client id>` (the id may contain `/`).
    if let Some(client) = path
        .strip_prefix("broker/sessions/")
        .or_else(|| path.strip_prefix("sessions/"))
    {
        return match query::restart_session(&app.shared.ctx, client).await? {
            Some(restored) => {
                tracing::info!(path = %path, restored, "session_restart_requested");
                Ok(Json(Restarted {
                    path: path.clone(),
                    restored: Some(restored),
                }))
            }
            None => Err(unknown_client(client)),
        };
    }
    match roost_actors::supervisor::restart_path(&app.root, &path).await {
        Ok(()) => {
            tracing::info!(path = %path, "subtree_restart_requested");
            Ok(Json(Restarted {
                path,
                restored: None,
            }))
        }
        Err(SupervisorError::RefusedRoot) => Err(ApiError::bad_request(
            "refusing to restart the root: stop and start the node instead",
        )),
        Err(SupervisorError::UnknownPath(_)) => Err(ApiError::not_found(format!(
            "no actor at path {path:?} (see GET /api/v1/tree)"
        ))),
        Err(e @ (SupervisorError::Timeout | SupervisorError::Unreachable(_))) => Err(
            ApiError::unavailable(format!("cannot restart {path:?}: {e}")),
        ),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot restart {path:?}: {e}"),
        )),
    }
}

fn unknown_bridge(name: &str) -> ApiError {
    ApiError::not_found(format!("no bridge {name:?}"))
}

fn bridge_handle(
    app: &AppState,
    name: &str,
) -> Result<std::sync::Arc<roost_actors::bridge::BridgeHandle>, ApiError> {
    app.shared
        .ctx
        .bridges
        .get(name)
        .ok_or_else(|| unknown_bridge(name))
}

pub async fn bridges(State(app): State<AppState>) -> ApiResult<List<BridgeSummary>> {
    let data = app
        .shared
        .ctx
        .bridges
        .list()
        .iter()
        .map(|h| query::bridge_summary(h))
        .collect();
    Ok(Json(List { data }))
}

pub async fn bridge(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<BridgeDetail> {
    let h = bridge_handle(&app, &name)?;
    Ok(Json(query::bridge_detail(&h)))
}

/// Idempotent: pausing a paused bridge answers its state again.
pub async fn bridge_pause(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<BridgeSummary> {
    let h = bridge_handle(&app, &name)?;
    if h.pause() {
        tracing::info!(bridge = %name, "bridge_paused");
    }
    Ok(Json(query::bridge_summary(&h)))
}

pub async fn bridge_resume(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<BridgeSummary> {
    let h = bridge_handle(&app, &name)?;
    if h.resume() {
        tracing::info!(bridge = %name, "bridge_resumed");
    }
    Ok(Json(query::bridge_summary(&h)))
}

fn log_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "this node was started without a reloadable log filter",
    )
}

pub async fn log_level(State(app): State<AppState>) -> ApiResult<LogLevel> {
    let log = app.shared.log.as_ref().ok_or_else(log_unavailable)?;
    Ok(Json(LogLevel { level: log.level() }))
}

pub async fn set_log_level(State(app): State<AppState>, body: Bytes) -> ApiResult<LogLevel> {
    let want: LogLevel = json_body(&body)?;
    let log = app.shared.log.as_ref().ok_or_else(log_unavailable)?;
    match log.set(&want.level) {
        Ok(()) => Ok(Json(LogLevel { level: log.level() })),
        Err(e @ LogError::Invalid { .. }) => Err(ApiError::bad_request(e.to_string())),
        Err(e @ LogError::Reload(_)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}
