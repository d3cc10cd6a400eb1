//! `/api/v1/cluster...`: membership (issue #4), for `roost ctl cluster`;
//! `/api/v1/evacuation`: node evacuation, for `roost ctl evacuation`;
//! `/api/v1/rebalance`: cluster load rebalancing, for `roost ctl rebalance`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use roost_cluster::evacuation::{EvacuationParams, EvacuationStatus};
use roost_cluster::rebalance::{RebalanceParams, RebalanceStatus};
use roost_cluster::shared::EvacuationError;
use roost_cluster::{Cluster, ClusterStatus};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::AppState;

type ApiResult<T> = Result<Json<T>, ApiError>;

#[derive(Debug, Deserialize)]
pub struct JoinRequest {
    /// `host:port` of a node of the cluster to join.
    pub address: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterDone {
    pub node: String,
    pub result: String,
}

fn cluster(app: &AppState) -> Result<Cluster, ApiError> {
    app.shared
        .cluster
        .clone()
        .ok_or_else(|| ApiError::unavailable("clustering is not running on this node"))
}

fn failed(e: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, e)
}

pub async fn status(State(app): State<AppState>) -> ApiResult<ClusterStatus> {
    let c = cluster(&app)?;
    c.status().await.map(Json).map_err(ApiError::unavailable)
}

pub async fn join(State(app): State<AppState>, body: Bytes) -> ApiResult<ClusterDone> {
    let req: JoinRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let address = req.address.trim().to_owned();
    if roost_cluster::settings::parse_host_port(&address).is_none() {
        return Err(ApiError::bad_request(format!(
            "expected the address of a node as host:port (its cluster.listen port), got {address:?}"
        )));
    }
    let c = cluster(&app)?;
    let node = c.join(address).await.map_err(failed)?;
    tracing::info!(%node, "cluster_joined");
    Ok(Json(ClusterDone {
        node,
        result: "joined".into(),
    }))
}

pub async fn leave(State(app): State<AppState>) -> ApiResult<ClusterDone> {
    let c = cluster(&app)?;
    c.leave().await.map_err(failed)?;
    Ok(Json(ClusterDone {
        node: app.shared.node_name.clone(),
        result: "left".into(),
    }))
}

/// `?force=true`: even when this node is in a minority, or when other
/// members still see the node up.
#[derive(Debug, Default, Deserialize)]
pub struct ForceLeaveQuery {
    #[serde(default)]
    pub force: bool,
}

pub async fn force_leave(
    State(app): State<AppState>,
    Path(node): Path<String>,
    Query(q): Query<ForceLeaveQuery>,
) -> ApiResult<ClusterDone> {
    let c = cluster(&app)?;
    c.force_leave(node.clone(), q.force).await.map_err(|e| {
        if e.contains("not a member") {
            ApiError::not_found(e)
        } else {
            failed(e)
        }
    })?;
    Ok(Json(ClusterDone {
        node,
        result: "removed".into(),
    }))
}

/// `POST /api/v1/evacuation`: every field may be left out (EMQX's
/// defaults: 60 s, 500/s). Unknown fields are refused, so a misspelt one
/// is not silently the default.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvacuationRequest {
    /// Seconds.
    pub wait_health_check: Option<u64>,
    pub redirect_to: Option<Vec<String>>,
    pub conn_evict_rate: Option<u32>,
    pub migrate_to: Option<Vec<String>>,
    /// Seconds.
    pub wait_takeover: Option<u64>,
    pub sess_evict_rate: Option<u32>,
}

impl EvacuationRequest {
    fn params(self) -> EvacuationParams {
        let d = EvacuationParams::default();
        EvacuationParams {
            wait_health_check_secs: self.wait_health_check.unwrap_or(d.wait_health_check_secs),
            redirect_to: self.redirect_to.unwrap_or_default(),
            conn_evict_rate: self.conn_evict_rate.unwrap_or(d.conn_evict_rate),
            migrate_to: self.migrate_to.unwrap_or_default(),
            wait_takeover_secs: self.wait_takeover.unwrap_or(d.wait_takeover_secs),
            sess_evict_rate: self.sess_evict_rate.unwrap_or(d.sess_evict_rate),
        }
    }
}

fn evacuation_error(e: EvacuationError) -> ApiError {
    match e {
        EvacuationError::Invalid(m) => ApiError::bad_request(m),
        EvacuationError::Conflict(m) => failed(m),
        EvacuationError::Failed(m) => ApiError::unavailable(m),
    }
}

/// A JSON body whose fields are all optional: an empty body is the
/// defaults.
fn optional_body<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

pub async fn evacuation_status(State(app): State<AppState>) -> ApiResult<EvacuationStatus> {
    let c = cluster(&app)?;
    c.evacuation_status()
        .await
        .map(Json)
        .map_err(ApiError::unavailable)
}

pub async fn evacuation_start(
    State(app): State<AppState>,
    body: Bytes,
) -> ApiResult<EvacuationStatus> {
    let req: EvacuationRequest = optional_body(&body)?;
    let c = cluster(&app)?;
    c.evacuation_start(req.params())
        .await
        .map(Json)
        .map_err(evacuation_error)
}

pub async fn evacuation_stop(State(app): State<AppState>) -> ApiResult<EvacuationStatus> {
    let c = cluster(&app)?;
    c.evacuation_stop()
        .await
        .map(Json)
        .map_err(evacuation_error)
}

/// `POST /api/v1/rebalance`: every field may be left out (EMQX's
/// defaults); unknown fields are refused.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebalanceRequest {
    pub nodes: Option<Vec<String>>,
    pub conn_evict_rate: Option<u32>,
    pub sess_evict_rate: Option<u32>,
    pub abs_conn_threshold: Option<u64>,
    pub rel_conn_threshold: Option<f64>,
    pub abs_sess_threshold: Option<u64>,
    pub rel_sess_threshold: Option<f64>,
    /// Seconds.
    pub wait_health_check: Option<u64>,
    /// Seconds.
    pub wait_takeover: Option<u64>,
}

impl RebalanceRequest {
    fn params(self) -> RebalanceParams {
        let d = RebalanceParams::default();
        RebalanceParams {
            nodes: self.nodes.unwrap_or_default(),
            conn_evict_rate: self.conn_evict_rate.unwrap_or(d.conn_evict_rate),
            sess_evict_rate: self.sess_evict_rate.unwrap_or(d.sess_evict_rate),
            abs_conn_threshold: self.abs_conn_threshold.unwrap_or(d.abs_conn_threshold),
            rel_conn_threshold: self.rel_conn_threshold.unwrap_or(d.rel_conn_threshold),
            abs_sess_threshold: self.abs_sess_threshold.unwrap_or(d.abs_sess_threshold),
            rel_sess_threshold: self.rel_sess_threshold.unwrap_or(d.rel_sess_threshold),
            wait_health_check_secs: self.wait_health_check.unwrap_or(d.wait_health_check_secs),
            wait_takeover_secs: self.wait_takeover.unwrap_or(d.wait_takeover_secs),
        }
    }
}

pub async fn rebalance_status(State(app): State<AppState>) -> ApiResult<RebalanceStatus> {
    let c = cluster(&app)?;
    Ok(Json(c.rebalance_status().await))
}

pub async fn rebalance_start(
    State(app): State<AppState>,
    body: Bytes,
) -> ApiResult<RebalanceStatus> {
    let req: RebalanceRequest = optional_body(&body)?;
    let c = cluster(&app)?;
    c.rebalance_start(req.params())
        .await
        .map(Json)
        .map_err(evacuation_error)
}

pub async fn rebalance_stop(State(app): State<AppState>) -> ApiResult<RebalanceStatus> {
    let c = cluster(&app)?;
    c.rebalance_stop().await.map(Json).map_err(evacuation_error)
}
