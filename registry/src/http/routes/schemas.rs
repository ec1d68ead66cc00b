//! `/schemas`: schemas by id, the subjects and versions using an id, and the schema types.

use axum::extract::State;

use crate::http::error::SrError;
use crate::http::extract::{Params, Path};
use crate::http::{AppState, SrJson};
use crate::record::SchemaType;
use crate::service::{Error, SchemaById, SubjectAndVersion};

/// Parses a schema id; anything else names no schema (40403).
pub fn parse_id(id: &str) -> Result<u32, SrError> {
    id.parse::<u32>()
        .map_err(|_| SrError::from(Error::SchemaNotFound(id.chars().take(32).collect())))
}

/// `GET /schemas/ids/{id}` (`?subject=`).
pub async fn get(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<SrJson<SchemaById>, SrError> {
    let id = parse_id(&id)?;
    Ok(SrJson(st.registry.schema_by_id(id, q.get("subject"))?))
}

/// `GET /schemas/ids/{id}/schema`: the schema text alone.
pub async fn get_schema(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<SrJson<serde_json::Value>, SrError> {
    let id = parse_id(&id)?;
    let s = st.registry.schema_by_id(id, q.get("subject"))?;
    Ok(SrJson(raw(&s.schema)))
}

/// A schema text as a JSON answer: the JSON it holds (Avro, JSON Schema), else a string.
pub fn raw(schema: &str) -> serde_json::Value {
    serde_json::from_str(schema).unwrap_or_else(|_| serde_json::Value::from(schema))
}

/// `GET /schemas/ids/{id}/versions`.
pub async fn versions(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<SrJson<Vec<SubjectAndVersion>>, SrError> {
    let id = parse_id(&id)?;
    Ok(SrJson(st.registry.id_versions(id, q.flag("deleted"))?))
}

/// `GET /schemas/ids/{id}/subjects`.
pub async fn subjects(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: Params,
) -> Result<SrJson<Vec<String>>, SrError> {
    let id = parse_id(&id)?;
    Ok(SrJson(st.registry.id_subjects(id, q.flag("deleted"))?))
}

/// `GET /schemas/types`.
pub async fn types() -> SrJson<Vec<&'static str>> {
    SrJson(SchemaType::ALL.iter().map(|t| t.as_str()).collect())
}
