//! `/config` and `/mode`: compatibility levels (global and per subject) and the global mode.

use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::spawned;
use crate::http::error::SrError;
use crate::http::extract::{Params, Path, SrBody};
use crate::http::{AppState, SrJson};
use crate::record::{Compatibility, Mode};
use crate::service::Error;

/// Body of `PUT /config`.
#[derive(Debug, Deserialize)]
pub struct ConfigUpdate {
    /// The level, e.g. `FULL`.
    #[serde(default)]
    pub compatibility: Option<serde_json::Value>,
}

/// Answer of `PUT /config`.
#[derive(Debug, Serialize)]
pub struct ConfigSet {
    /// The level set.
    pub compatibility: Compatibility,
}

/// Answer of `GET|DELETE /config`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigLevel {
    /// The level.
    pub compatibility_level: Compatibility,
}

/// Body and answer of `PUT|GET /mode`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ModeBody {
    /// The mode.
    #[serde(default)]
    pub mode: Option<serde_json::Value>,
}

fn level(v: Option<serde_json::Value>) -> Result<Compatibility, SrError> {
    let text = v
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "null".into());
    let upper = v
        .as_ref()
        .and_then(|v| v.as_str())
        .map(|s| serde_json::Value::from(s.to_ascii_uppercase()));
    upper
        .and_then(|u| serde_json::from_value(u).ok())
        .ok_or_else(|| Error::InvalidCompatibility(text.chars().take(64).collect()).into())
}

/// `GET /config`.
pub async fn get_global(State(st): State<AppState>) -> Result<SrJson<ConfigLevel>, SrError> {
    Ok(SrJson(ConfigLevel {
        compatibility_level: st.registry.get_config(None, true)?,
    }))
}

/// `PUT /config`.
pub async fn put_global(
    State(st): State<AppState>,
    SrBody(body): SrBody<ConfigUpdate>,
) -> Result<SrJson<ConfigSet>, SrError> {
    let level = level(body.compatibility)?;
    let reg = st.registry.clone();
    spawned(async move { reg.set_config(None, level).await }).await?;
    Ok(SrJson(ConfigSet {
        compatibility: level,
    }))
}

/// `DELETE /config`: back to the default (BACKWARD); answers the level removed.
pub async fn delete_global(State(st): State<AppState>) -> Result<SrJson<ConfigLevel>, SrError> {
    let reg = st.registry.clone();
    let previous = spawned(async move { reg.delete_config(None).await }).await?;
    Ok(SrJson(ConfigLevel {
        compatibility_level: previous,
    }))
}

/// `GET /config/{subject}` (`?defaultToGlobal=`).
pub async fn get_subject(
    State(st): State<AppState>,
    Path(subject): Path<String>,
    q: Params,
) -> Result<SrJson<ConfigLevel>, SrError> {
    Ok(SrJson(ConfigLevel {
        compatibility_level: st
            .registry
            .get_config(Some(&subject), q.flag("defaultToGlobal"))?,
    }))
}

/// `PUT /config/{subject}`.
pub async fn put_subject(
    State(st): State<AppState>,
    Path(subject): Path<String>,
    SrBody(body): SrBody<ConfigUpdate>,
) -> Result<SrJson<ConfigSet>, SrError> {
    let level = level(body.compatibility)?;
    let reg = st.registry.clone();
    spawned(async move { reg.set_config(Some(&subject), level).await }).await?;
    Ok(SrJson(ConfigSet {
        compatibility: level,
    }))
}

/// `DELETE /config/{subject}`: the subject falls back to the global level.
pub async fn delete_subject(
    State(st): State<AppState>,
    Path(subject): Path<String>,
) -> Result<SrJson<ConfigLevel>, SrError> {
    let reg = st.registry.clone();
    let previous = spawned(async move { reg.delete_config(Some(&subject)).await }).await?;
    Ok(SrJson(ConfigLevel {
        compatibility_level: previous,
    }))
}

/// `GET /mode`.
pub async fn get_mode(State(st): State<AppState>) -> Result<SrJson<ModeBody>, SrError> {
    let mode = st.registry.get_mode()?;
    Ok(SrJson(ModeBody {
        mode: Some(serde_json::to_value(mode).expect("modes serialize")),
    }))
}

/// `PUT /mode`.
pub async fn put_mode(
    State(st): State<AppState>,
    SrBody(body): SrBody<ModeBody>,
) -> Result<SrJson<ModeBody>, SrError> {
    let text = body
        .mode
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "null".into());
    let mode: Mode = body
        .mode
        .as_ref()
        .and_then(|v| v.as_str())
        .and_then(|s| serde_json::from_value(serde_json::Value::from(s.to_ascii_uppercase())).ok())
        .ok_or_else(|| SrError::from(Error::InvalidMode(text.chars().take(64).collect())))?;
    let reg = st.registry.clone();
    spawned(async move { reg.set_mode(mode).await }).await?;
    Ok(SrJson(ModeBody {
        mode: Some(serde_json::to_value(mode).expect("modes serialize")),
    }))
}
