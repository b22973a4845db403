//! The agent websocket: `GET /agent/ws`, one session per connection.

pub mod protocol;
