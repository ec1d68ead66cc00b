//! `/compatibility`: would a schema be accepted under the subject's compatibility level?

use axum::extract::State;
use serde::Serialize;

use crate::http::error::SrError;
use crate::http::extract::{Params, Path, SrBody};
use crate::http::{AppState, SrJson};
use crate::service::{SchemaRequest, VersionRef};

/// Answer of a compatibility check.
#[derive(Debug, Serialize)]
pub struct CompatibilityAnswer {
    /// Whether the schema is compatible.
    pub is_compatible: bool,
    /// Why not (with `?verbose=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<String>>,
}

fn answer(reasons: Vec<String>, verbose: bool) -> SrJson<CompatibilityAnswer> {
    SrJson(CompatibilityAnswer {
        is_compatible: reasons.is_empty(),
        messages: verbose.then_some(reasons),
    })
}

/// `POST /compatibility/subjects/{subject}/versions/{version}` (`?verbose=`).
pub async fn check_version(
    State(st): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    q: Params,
    SrBody(req): SrBody<SchemaRequest>,
) -> Result<SrJson<CompatibilityAnswer>, SrError> {
    let v = VersionRef::parse(&version)?;
    let reasons = st.registry.check_compatibility(&subject, Some(v), &req)?;
    Ok(answer(reasons, q.flag("verbose")))
}

/// `POST /compatibility/subjects/{subject}/versions` (`?verbose=`): against the versions the
/// subject's level checks.
pub async fn check_all(
    State(st): State<AppState>,
    Path(subject): Path<String>,
    q: Params,
    SrBody(req): SrBody<SchemaRequest>,
) -> Result<SrJson<CompatibilityAnswer>, SrError> {
    let reasons = st.registry.check_compatibility(&subject, None, &req)?;
    Ok(answer(reasons, q.flag("verbose")))
}
