//! `GET /healthz`: the process is up and its database answers.

use actix_web::{web, HttpResponse};

use super::AppState;

pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "journal_last_seq": state.journal.last_seq(),
    }))
}
