//! `/subjects`: register, look up, list, read and delete subjects' versions.

use axum::extract::State;
use serde::Serialize;

use super::spawned;
use crate::http::error::SrError;
use crate::http::extract::{Params, Path, SrBody};
use crate::http::routes::schemas::raw;
use crate::http::{AppState, SrJson};
use crate::service::{SchemaRequest, SubjectVersion, VersionRef};

/// Answer of a registration.
#[derive(Debug, Serialize)]
pub struct Registered {
    /// The schema's id.
    pub id: u32,
}

/// `GET /subjects` (`?deleted=`, `?subjectPrefix=`).
pub async fn list(State(st): State<AppState>, q: Params) -> Result<SrJson<Vec<String>>, SrError> {
    let prefix = q
        .get("subjectPrefix")
        .filter(|p| !p.is_empty() && *p != ":*:");
    Ok(SrJson(st.registry.subjects(q.flag("deleted"), prefix)?))
}

/// `POST /subjects/{subject}/versions` (`?normalize=`).
pub async fn register(
    State(st): State<AppState>,
    Path(subject): Path<String>,
    q: Params,
    SrBody(req): SrBody<SchemaRequest>,
) -> Result<SrJson<Registered>, SrError> {
    let normalize = q.flag("normalize");
    let reg = st.registry.clone();
    let id = spawned(async move { reg.register(&subject, req, normalize).await }).await?;
    Ok(SrJson(Registered { id }))
}

/// `POST /subjects/{subject}` (`?deleted=`): the version holding this schema.
pub async fn lookup(
    State(st): State<AppState>,
    Path(subject): Path<String>,
    q: Params,
    SrBody(req): SrBody<SchemaRequest>,
) -> Result<SrJson<SubjectVersion>, SrError> {
    Ok(SrJson(st.registry.lookup(
        &subject,
        &req,
        q.flag("deleted"),
    )?))
}

/// `DELETE /subjects/{subject}` (`?permanent=`).
pub async fn delete(
    State(st): State<AppState>,
    Path(subject): Path<String>,
    q: Params,
) -> Result<SrJson<Vec<u32>>, SrError> {
    let permanent = q.flag("permanent");
    let reg = st.registry.clone();
    Ok(SrJson(
        spawned(async move { reg.delete_subject(&subject, permanent).await }).await?,
    ))
}

/// `GET /subjects/{subject}/versions` (`?deleted=`).
pub async fn versions(
    State(st): State<AppState>,
    Path(subject): Path<String>,
    q: Params,
) -> Result<SrJson<Vec<u32>>, SrError> {
    Ok(SrJson(st.registry.versions(&subject, q.flag("deleted"))?))
}

/// `GET /subjects/{subject}/versions/{version}` (`?deleted=`).
pub async fn get_version(
    State(st): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    q: Params,
) -> Result<SrJson<SubjectVersion>, SrError> {
    let v = VersionRef::parse(&version)?;
    Ok(SrJson(st.registry.version(
        &subject,
        v,
        q.flag("deleted"),
    )?))
}

/// `GET /subjects/{subject}/versions/{version}/schema`: the schema text alone.
pub async fn get_version_schema(
    State(st): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    q: Params,
) -> Result<SrJson<serde_json::Value>, SrError> {
    let v = VersionRef::parse(&version)?;
    let sv = st.registry.version(&subject, v, q.flag("deleted"))?;
    Ok(SrJson(raw(&sv.schema)))
}

/// `GET /subjects/{subject}/versions/{version}/referencedby`.
pub async fn referenced_by(
    State(st): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<SrJson<Vec<u32>>, SrError> {
    let v = VersionRef::parse(&version)?;
    Ok(SrJson(st.registry.referenced_by(&subject, v)?))
}

/// `DELETE /subjects/{subject}/versions/{version}` (`?permanent=`).
pub async fn delete_version(
    State(st): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    q: Params,
) -> Result<SrJson<u32>, SrError> {
    let v = VersionRef::parse(&version)?;
    let permanent = q.flag("permanent");
    let reg = st.registry.clone();
    Ok(SrJson(
        spawned(async move { reg.delete_version(&subject, v, permanent).await }).await?,
    ))
}
