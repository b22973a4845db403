//! Bearer-token check of the operators' API (`admin.token`).

use std::future::{ready, Ready};

use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::{AppState, ErrorBody};

/// Present in a handler's arguments: the request carried the admin token.
pub struct Admin;

#[derive(Debug, thiserror::Error)]
#[error("missing or wrong bearer token")]
pub struct Unauthorized;

impl ResponseError for Unauthorized {
    fn status_code(&self) -> StatusCode {
        StatusCode::UNAUTHORIZED
    }

    fn error_response(&self) -> HttpResponse {
        let mut response =
            ErrorBody::new("unauthorized", self.to_string()).respond(self.status_code());
        response.headers_mut().insert(
            actix_web::http::header::WWW_AUTHENTICATE,
            actix_web::http::header::HeaderValue::from_static("Bearer"),
        );
        response
    }
}

impl FromRequest for Admin {
    type Error = Unauthorized;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let expected = request
            .app_data::<web::Data<AppState>>()
            .map(|s| s.settings.admin.token.expose_secret().to_owned())
            .unwrap_or_default();
        let given = request
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = match given {
            // Compare digests so the time taken says nothing about the token.
            Some(given) if !expected.is_empty() => {
                Sha256::digest(given.as_bytes()) == Sha256::digest(expected.as_bytes())
            }
            _ => false,
        };
        ready(if ok { Ok(Admin) } else { Err(Unauthorized) })
    }
}

/// Present in a handler's arguments: the request carried the admin token or an agent's token
/// (in `Authorization: Bearer` or, for browsers' `<img src>`, `?token=`).
pub enum Caller {
    Admin,
    Agent(linedesk_actors::domain::AgentId),
}

impl Caller {
    pub fn agent(&self) -> Option<&linedesk_actors::domain::AgentId> {
        match self {
            Self::Agent(id) => Some(id),
            Self::Admin => None,
        }
    }
}

impl FromRequest for Caller {
    type Error = Unauthorized;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let Some(state) = request.app_data::<web::Data<AppState>>() else {
            return ready(Err(Unauthorized));
        };
        let Some(given) = crate::agent_ws::token_of(request) else {
            return ready(Err(Unauthorized));
        };
        let digest = Sha256::digest(given.as_bytes());
        let admin = state.settings.admin.token.expose_secret();
        if !admin.is_empty() && digest == Sha256::digest(admin.as_bytes()) {
            return ready(Ok(Caller::Admin));
        }
        let agent = state
            .agents
            .iter()
            .find(|a| a.token_digest[..] == digest[..])
            .map(|a| Caller::Agent(a.id.clone()));
        ready(agent.ok_or(Unauthorized))
    }
}
