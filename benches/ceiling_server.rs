//! The ceiling for `benches/ingest.sh`: a bare actix-web handler that reads the webhook body and
//! answers 200, with the same HTTP stack and settings as linedesk (one worker), and nothing else.
//! Not a benchmark by itself: `benches/ingest.sh` starts it and drives it like linedesk.

use actix_web::{web, App, HttpResponse, HttpServer};

async fn webhook(body: web::Bytes) -> HttpResponse {
    std::hint::black_box(body);
    HttpResponse::Ok().json(serde_json::json!({}))
}

fn main() -> std::io::Result<()> {
    actix_web::rt::System::new().block_on(async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        println!("listening on http://{}", listener.local_addr()?);
        HttpServer::new(|| App::new().route("/line/webhook/{account}", web::post().to(webhook)))
            .workers(1)
            .listen(listener)?
            .run()
            .await
    })
}
