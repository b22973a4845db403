//! The profile fetcher: answers conversations' [`LookupProfile`] from the contact store while
//! fresh, else from LINE (`GET /v2/bot/profile/{userId}`), remembering a 404 (blocked, not a
//! friend) for the same time so that it is not asked again in a loop.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use linedesk_actors::domain::{AccountId, ConversationKey, CustomerProfile, LineSource};
use linedesk_actors::outbound::LookupProfile;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;

use linedesk_actors::conversation::now_ms;

use crate::line::client::LineClient;
use crate::metrics::Metrics;
use crate::storage::{ContactRecord, SledContacts, CONTACT_FORMAT_VERSION};

pub struct ProfileFetcher {
    client: LineClient,
    contacts: SledContacts,
    tokens: HashMap<AccountId, SecretString>,
    ttl_ms: i64,
    metrics: Arc<Metrics>,
    /// Lookups waiting for a fetch already under way: one request per customer.
    waiting: HashMap<ConversationKey, Vec<oneshot::Sender<Option<CustomerProfile>>>>,
}

impl ProfileFetcher {
    pub fn new(
        client: LineClient,
        contacts: SledContacts,
        tokens: Vec<(AccountId, SecretString)>,
        ttl_ms: i64,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            contacts,
            tokens: tokens.into_iter().collect(),
            ttl_ms,
            metrics,
            waiting: HashMap::new(),
        }
    }

    fn finish(&mut self, key: &ConversationKey, profile: Option<CustomerProfile>) {
        for waiter in self.waiting.remove(key).unwrap_or_default() {
            let _ = waiter.send(profile.clone());
        }
    }
}

impl Actor for ProfileFetcher {
    type Context = Context<Self>;
}

impl Handler<LookupProfile> for ProfileFetcher {
    type Result = ResponseFuture<Option<CustomerProfile>>;

    fn handle(&mut self, msg: LookupProfile, ctx: &mut Self::Context) -> Self::Result {
        let key = msg.key;
        let cached = self.contacts.get(&key).unwrap_or_else(|e| {
            tracing::warn!(error.message = %e, "could not read a contact");
            None
        });
        if let Some(record) = cached.filter(|r| r.is_fresh(now_ms(), self.ttl_ms)) {
            return Box::pin(async move { record.profile });
        }
        // Only one-to-one chats have a profile (group members would need the member API).
        let (LineSource::User(user_id), Some(token)) = (&key.source, self.tokens.get(&key.account))
        else {
            return Box::pin(async { None });
        };
        let (tx, rx) = oneshot::channel();
        let first = !self.waiting.contains_key(&key);
        self.waiting.entry(key.clone()).or_default().push(tx);
        if first {
            let client = self.client.clone();
            let token = token.expose_secret().to_owned();
            let user_id = user_id.clone();
            let fetch = async move { client.profile(&token, &user_id).await };
            ctx.spawn(fetch.into_actor(self).map(move |answer, act, _| {
                let profile = match answer {
                    Ok(found) => {
                        act.metrics.profile_fetched(found.is_some());
                        let profile = found.map(|p| CustomerProfile {
                            display_name: Some(p.display_name),
                            picture_url: p.picture_url,
                            language: p.language,
                            status_message: p.status_message,
                        });
                        let record = ContactRecord {
                            v: CONTACT_FORMAT_VERSION,
                            profile: profile.clone(),
                            fetched_at_ms: now_ms(),
                        };
                        if let Err(e) = act.contacts.put(&key, &record) {
                            tracing::warn!(error.message = %e, "could not store a profile");
                        }
                        profile
                    }
                    Err(e) => {
                        // Not remembered: the next conversation asks again.
                        tracing::warn!(error.kind = e.kind(), error.message = %e, "profile fetch failed");
                        None
                    }
                };
                act.finish(&key, profile);
            }));
        }
        Box::pin(async move { rx.await.ok().flatten() })
    }
}
