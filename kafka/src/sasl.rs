//! SASL/PLAIN authentication of a Kafka connection (`security.protocol=SASL_PLAINTEXT` or
//! `SASL_SSL`, `sasl.mechanism=PLAIN`).
//!
//! When the listener has an [`Authenticator`], a connection must authenticate before anything
//! but ApiVersions: SaslHandshake v1 naming `PLAIN`, then SaslAuthenticate carrying
//! `authzid \0 username \0 password`. A failed authentication is answered
//! SASL_AUTHENTICATION_FAILED and the connection closed; any other request before
//! authentication closes it at once (as Kafka does). A client that stays on SaslHandshake v0
//! (raw SASL tokens after the handshake, from before Kafka 1.0) is answered, but its raw
//! token does not parse as a request and closes the connection.
//!
//! The check says what the credential may do ([`Access`]). A read-only session consumes as
//! Kafka's READ ACLs on topics and groups allow: Metadata (without creating topics), Fetch,
//! ListOffsets, the group protocol and offset commits. Its writes are answered with Kafka's
//! authorization errors, as a broker with ACLs does: Produce with TOPIC_AUTHORIZATION_FAILED
//! on every partition, CreateTopics and DeleteTopics with it on every topic, InitProducerId
//! (an idempotent producer's first call) with CLUSTER_AUTHORIZATION_FAILED.

use std::sync::Arc;

use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::codec::Request;
use crate::error::code;
use crate::handlers::{HandleError, Reply, decode, respond};

/// The SASL apis advertised (and served) when SASL is on. SaslHandshake is listed from v0
/// because librdkafka requires v0 in the range to use SASL at all; it then speaks v1.
pub const VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// What an authenticated connection may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Consume: read topics, join groups, commit offsets.
    ReadOnly,
    /// Everything.
    ReadWrite,
}

/// A check of a PLAIN username and password.
type Check = dyn Fn(&str, &str) -> Option<Access> + Send + Sync;

/// Checks a PLAIN username and password.
#[derive(Clone)]
pub struct Authenticator(Arc<Check>);

impl Authenticator {
    /// An authenticator that grants what `check` grants (`None`: refused).
    pub fn new(check: impl Fn(&str, &str) -> Option<Access> + Send + Sync + 'static) -> Self {
        Self(Arc::new(check))
    }

    /// What `username`/`password` may do, if they are accepted at all.
    pub fn check(&self, username: &str, password: &str) -> Option<Access> {
        (self.0)(username, password)
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator(..)")
    }
}

/// Where a connection stands in the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// Nothing yet: ApiVersions or SaslHandshake may come.
    #[default]
    Start,
    /// The handshake chose PLAIN: SaslAuthenticate comes next.
    Handshaken,
    /// Authenticated: every request is served, writes only with [`Access::ReadWrite`].
    Done(Access),
}

impl State {
    /// Whether the connection authenticated with a read-only credential.
    pub fn read_only(&self) -> bool {
        *self == State::Done(Access::ReadOnly)
    }
}

/// What the connection does with a request while SASL is on.
#[derive(Debug)]
pub enum Gate {
    /// Handle it as usual.
    Pass,
    /// Answer with this, then go on.
    Reply(Reply),
    /// Answer with this, then close the connection.
    ReplyAndClose(Reply),
    /// Close the connection without an answer.
    Close,
}

/// Advances `state` with `req` and says what to do with it.
pub fn gate(state: &mut State, auth: &Authenticator, req: &Request) -> Result<Gate, HandleError> {
    let key = req.key();
    match (*state, key) {
        (State::Done(_), _) | (_, Some(ApiKey::ApiVersions)) => Ok(Gate::Pass),
        (State::Start, Some(ApiKey::SaslHandshake)) if req.api_version <= 1 => {
            let hs: SaslHandshakeRequest = decode(req, "SaslHandshake")?;
            let mut resp = SaslHandshakeResponse::default();
            resp.mechanisms = vec![StrBytes::from_static_str("PLAIN")];
            if hs.mechanism.as_str() == "PLAIN" {
                *state = State::Handshaken;
            } else {
                resp.error_code = code::UNSUPPORTED_SASL_MECHANISM;
            }
            Ok(Gate::Reply(respond(req, &resp)?))
        }
        (State::Handshaken, Some(ApiKey::SaslAuthenticate)) if req.api_version <= 2 => {
            let a: SaslAuthenticateRequest = decode(req, "SaslAuthenticate")?;
            let mut resp = SaslAuthenticateResponse::default();
            let granted = plain(&a.auth_bytes)
                .and_then(|(user, password)| Some((user, auth.check(user, password)?)));
            match granted {
                Some((user, access)) => {
                    tracing::debug!(user, ?access, "sasl authenticated");
                    *state = State::Done(access);
                    Ok(Gate::Reply(respond(req, &resp)?))
                }
                None => {
                    let parsed = plain(&a.auth_bytes);
                    tracing::info!(user = parsed.map(|(u, _)| u), "sasl authentication failed");
                    resp.error_code = code::SASL_AUTHENTICATION_FAILED;
                    resp.error_message = Some(StrBytes::from_static_str(
                        "authentication failed: the password must be a Kelp API key (a read key only consumes)",
                    ));
                    Ok(Gate::ReplyAndClose(respond(req, &resp)?))
                }
            }
        }
        (_, Some(ApiKey::SaslAuthenticate)) if req.api_version <= 2 => {
            let mut resp = SaslAuthenticateResponse::default();
            resp.error_code = code::ILLEGAL_SASL_STATE;
            Ok(Gate::ReplyAndClose(respond(req, &resp)?))
        }
        (_, Some(ApiKey::SaslHandshake | ApiKey::SaslAuthenticate)) => {
            Ok(Gate::ReplyAndClose(crate::handlers::unsupported(req)?))
        }
        _ => {
            tracing::info!(api = ?key, "request before sasl authentication: closing");
            Ok(Gate::Close)
        }
    }
}

/// The username and password of a PLAIN message (`authzid \0 authcid \0 passwd`, RFC 4616).
fn plain(bytes: &[u8]) -> Option<(&str, &str)> {
    let mut parts = bytes.splitn(3, |b| *b == 0);
    let _authzid = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let password = std::str::from_utf8(parts.next()?).ok()?;
    (!password.is_empty()).then_some((user, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_plain_message_parts() {
        assert_eq!(plain(b"\0alice\0secret"), Some(("alice", "secret")));
        assert_eq!(plain(b"admin\0alice\0secret"), Some(("alice", "secret")));
        assert_eq!(plain(b"\0alice\0"), None);
        assert_eq!(plain(b"alice"), None);
        assert_eq!(plain(b"\0alice\0\xff"), None);
    }
}
