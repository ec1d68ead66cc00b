//! `POST|GET /topics/{ns}/{topic}` and `GET /topics`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::api::broker::{CreateTopicRequest, TopicInfo, TopicList};
use common::http::{ApiError, Json, Path};

use crate::http::AppState;
use crate::store::TopicKey;

/// `POST /topics/{ns}/{topic}` `{"partitions":N}`: 201 when created, 200 when it exists alike.
pub async fn create(
    State(broker): State<AppState>,
    Path((ns, topic)): Path<(String, String)>,
    Json(req): Json<CreateTopicRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let (created, info) = broker
        .create_topic(TopicKey::new(ns, topic), req.partitions)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)))
}

/// `GET /topics/{ns}/{topic}`.
pub async fn get(
    State(broker): State<AppState>,
    Path((ns, topic)): Path<(String, String)>,
) -> Result<Json<TopicInfo>, ApiError> {
    let key = TopicKey::new(ns, topic);
    let mut info = broker.get_topic(&key)?;
    broker.fill_remote_offsets(&key, &mut info).await?;
    Ok(Json(info))
}

/// `GET /topics`.
pub async fn list(State(broker): State<AppState>) -> Result<Json<TopicList>, ApiError> {
    Ok(Json(TopicList {
        topics: broker.list_topics()?,
    }))
}
