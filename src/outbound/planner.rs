//! From an outgoing message to LINE requests: message objects per content, the agent shown as
//! `sender` where the workstream wants it, at most 5 messages per request.

use std::collections::HashMap;
use std::sync::Arc;

use linedesk_actors::domain::{AgentId, Origin, Outgoing};

use crate::line::outgoing::{self, QuickReply, Sender};
use crate::settings::Settings;
use crate::storage::Planner;

/// The planner the outbox uses, with the agents' names and icons from `settings`.
pub fn planner(settings: &Settings) -> Arc<Planner> {
    let senders: HashMap<AgentId, Sender> = settings
        .agents
        .iter()
        .map(|a| {
            let sender = Sender {
                name: a.name.clone(),
                icon_url: a.icon_url.clone(),
            };
            (a.id.clone(), sender)
        })
        .collect();
    Arc::new(move |message: &Outgoing| plan(message, &senders))
}

fn plan(
    message: &Outgoing,
    senders: &HashMap<AgentId, Sender>,
) -> Result<Vec<Vec<serde_json::Value>>, String> {
    let sender = match (&message.origin, message.show_sender) {
        (Origin::Agent { agent, .. }, true) => senders.get(agent),
        _ => None,
    };
    let mut objects = Vec::new();
    for content in &message.contents {
        objects.extend(outgoing::line_messages(content, sender).map_err(|e| e.to_string())?);
    }
    let quick_replies: Vec<QuickReply> = message
        .quick_replies
        .iter()
        .map(|q| QuickReply {
            label: q.label.clone(),
            text: q.text.clone(),
        })
        .collect();
    Ok(outgoing::requests(objects, &quick_replies))
}
