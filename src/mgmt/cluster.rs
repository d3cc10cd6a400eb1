//! `/api/v1/cluster...`: membership (issue #4), for `roost ctl cluster`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
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
