//! Attachments over HTTP.
//! - `POST /api/content?name=FILE` (agent or admin token): upload; answers the public URL to
//!   send (LINE fetches it from there). Over `content.max_bytes` → 413, nothing stored.
//! - `GET /content/{id}`: public, agents' uploads only (customers' media are never public).
//! - `GET /api/content/{id}` (agent or admin token): any stored file, customers' media included.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::admin::Caller;
use super::{AppState, ErrorBody};
use crate::storage::{ContentError, ContentMeta, ContentOrigin, ContentStore};

#[derive(Deserialize)]
pub struct UploadQuery {
    name: Option<String>,
}

pub async fn upload(
    caller: Caller,
    request: HttpRequest,
    query: web::Query<UploadQuery>,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let store = &state.outbound.content;
    let limit = store.max_bytes();
    let too_large = || {
        ErrorBody::new(
            "payload_too_large",
            format!(
                "the file is larger than content.max_bytes ({limit} bytes); nothing was stored"
            ),
        )
        .respond(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return ErrorBody::new("bad_request", "the upload could not be read")
                .respond(StatusCode::BAD_REQUEST);
        };
        if (body.len() + chunk.len()) as u64 > limit {
            return too_large();
        }
        body.extend_from_slice(&chunk);
    }
    if body.is_empty() {
        return ErrorBody::new("bad_request", "the upload is empty")
            .respond(StatusCode::BAD_REQUEST);
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let id = ContentStore::upload_id();
    let origin = ContentOrigin::Upload {
        agent: caller.agent().map(|a| a.to_string()),
    };
    let name = query.into_inner().name;
    match store.put(&id, origin, content_type, name, &body) {
        Ok(meta) => HttpResponse::Created().json(json!({
            "id": meta.id,
            "url": public_url(&state, &meta),
            "size": meta.size,
            "content_type": meta.content_type,
            "name": meta.name,
        })),
        Err(ContentError::TooLarge { .. }) => too_large(),
        Err(e) => {
            tracing::error!(error.message = %e, "an upload could not be stored");
            ErrorBody::new("internal", "the file could not be stored")
                .respond(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// Public: only agents' uploads (LINE fetches them); anything else is "not found".
pub async fn public(id: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    serve(&state, &id, |meta| {
        matches!(meta.origin, ContentOrigin::Upload { .. })
    })
}

/// For agents and operators: any stored file.
pub async fn private(
    _caller: Caller,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    serve(&state, &id, |_| true)
}

fn serve(state: &AppState, id: &str, allowed: impl Fn(&ContentMeta) -> bool) -> HttpResponse {
    let not_found =
        || ErrorBody::new("not_found", format!("no content `{id}`")).respond(StatusCode::NOT_FOUND);
    match state.outbound.content.read(id) {
        Ok(Some((meta, bytes))) if allowed(&meta) => {
            let content_type = meta
                .content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into());
            // Uploaded bytes are whatever someone sent: never let a browser run them as a page
            // of this origin. Media show inline; anything else downloads.
            let media = ["image/", "video/", "audio/"]
                .iter()
                .any(|kind| content_type.starts_with(kind));
            let mut response = HttpResponse::Ok();
            response.content_type(content_type);
            response.insert_header(("x-content-type-options", "nosniff"));
            response.insert_header(("content-security-policy", "default-src 'none'; sandbox"));
            // Ids never change content: cache freely.
            response.insert_header((header::CACHE_CONTROL, "private, max-age=86400, immutable"));
            let disposition = if media { "inline" } else { "attachment" };
            let name = meta.name.as_deref().unwrap_or(&meta.id);
            response.insert_header((
                header::CONTENT_DISPOSITION,
                format!("{disposition}; {}", filename_params(name)),
            ));
            response.body(bytes)
        }
        Ok(_) => not_found(),
        Err(e) => {
            tracing::error!(error.message = %e, content_id = %id, "stored content unreadable");
            ErrorBody::new("internal", "the file could not be read")
                .respond(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// Where LINE (and anyone with the link) fetches an upload.
pub fn public_url(state: &AppState, meta: &ContentMeta) -> String {
    format!(
        "{}/content/{}",
        state.settings.server.public_url.trim_end_matches('/'),
        meta.id
    )
}

/// `filename="ascii"; filename*=UTF-8''percent-encoded` (RFC 6266): any name, safely quoted.
fn filename_params(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_names_are_quoted_safely_in_any_script() {
        assert_eq!(
            super::filename_params("領収書 \"2\".pdf"),
            "filename=\"___ _2_.pdf\"; filename*=UTF-8''%E9%A0%98%E5%8F%8E%E6%9B%B8%20%222%22.pdf"
        );
    }
}
