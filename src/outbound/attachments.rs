//! The attachment fetcher: downloads what customers send (images, video, audio, files) as
//! soon as the webhook is stored, because LINE keeps it only briefly. From LINE's content API,
//! or from the customer's external provider URL; into the content store, under
//! `content.max_bytes`. A failed download is retried a few times with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use linedesk_actors::domain::AccountId;
use secrecy::{ExposeSecret, SecretString};

use crate::line::backoff::{jitter, Backoff};
use crate::line::client::{LineClient, LineError};
use crate::metrics::Metrics;
use crate::storage::{ContentOrigin, ContentStore, PendingDownload};

/// Download attempts before giving up on one attachment.
const ATTEMPTS: u32 = 4;

/// A customer's message carries media to download. Sent by the webhook with `do_send`, once
/// the download is recorded as pending in the content store (so a restart resumes it).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct FetchAttachment {
    pub download: PendingDownload,
    pub attempt: u32,
}

pub struct AttachmentFetcher {
    client: LineClient,
    content: ContentStore,
    tokens: HashMap<AccountId, SecretString>,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

impl AttachmentFetcher {
    pub fn new(
        client: LineClient,
        content: ContentStore,
        tokens: Vec<(AccountId, SecretString)>,
        backoff: Backoff,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            content,
            tokens: tokens.into_iter().collect(),
            backoff,
            metrics,
        }
    }
}

impl AttachmentFetcher {
    fn finished(&self, id: &str) {
        if let Err(e) = self.content.remove_pending(id) {
            tracing::warn!(content_id = %id, error.message = %e, "could not clear a finished download");
        }
    }
}

impl Actor for AttachmentFetcher {
    type Context = Context<Self>;

    /// Resumes what a stop or crash interrupted.
    fn started(&mut self, ctx: &mut Self::Context) {
        let pending = self.content.pending();
        if !pending.is_empty() {
            tracing::info!(downloads = pending.len(), "resuming attachment downloads");
        }
        for download in pending {
            ctx.notify(FetchAttachment {
                download,
                attempt: 0,
            });
        }
    }
}

impl Handler<FetchAttachment> for AttachmentFetcher {
    type Result = ();

    fn handle(&mut self, msg: FetchAttachment, ctx: &mut Self::Context) {
        let id = msg.download.id();
        if matches!(self.content.meta(&id), Ok(Some(_))) {
            return self.finished(&id); // a redelivered event: stored already
        }
        let account = AccountId::parse(&msg.download.account).ok();
        let Some(token) = account.and_then(|a| self.tokens.get(&a)) else {
            tracing::warn!(content_id = %id, "attachment of an account that is not configured; dropped");
            return self.finished(&id);
        };
        let client = self.client.clone();
        let token = token.expose_secret().to_owned();
        let limit = self.content.max_bytes();
        let request = msg.clone();
        let download = async move {
            let download = &request.download;
            match &download.external_url {
                Some(url) => client.download(url, limit).await,
                None => client.content(&token, &download.message_id, limit).await,
            }
        };
        ctx.spawn(download.into_actor(self).map(move |answer, act, ctx| {
            let origin = ContentOrigin::Customer {
                account: msg.download.account.clone(),
                message_id: msg.download.message_id.clone(),
            };
            match answer {
                Ok(file) => {
                    let name = msg.download.name.clone();
                    let stored = act.content.put(&id, origin, file.content_type, name, &file.bytes);
                    match stored {
                        Ok(meta) => {
                            act.finished(&id);
                            act.metrics.attachment_stored(meta.size);
                            tracing::debug!(content_id = %id, bytes = meta.size, "attachment stored");
                        }
                        Err(e) => tracing::warn!(content_id = %id, error.message = %e, "attachment not stored"),
                    }
                }
                Err(e @ LineError::TooLarge { .. }) => {
                    act.finished(&id);
                    act.metrics.attachment_failed();
                    tracing::warn!(content_id = %id, error.message = %e, "attachment over content.max_bytes; not stored");
                }
                Err(e) if e.is_retryable() && msg.attempt + 1 < ATTEMPTS => {
                    let delay: Duration = act.backoff.delay(msg.attempt, jitter());
                    tracing::info!(content_id = %id, error.kind = e.kind(), retry_in_ms = delay.as_millis() as u64, "attachment download failed; retrying");
                    let mut again = msg.clone();
                    again.attempt += 1;
                    ctx.notify_later(again, delay);
                }
                Err(e) => {
                    act.finished(&id);
                    act.metrics.attachment_failed();
                    tracing::warn!(content_id = %id, error.kind = e.kind(), error.message = %e, "attachment download failed for good");
                }
            }
        }));
    }
}
