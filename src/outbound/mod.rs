//! The way back to LINE: the outbox dispatcher (replies and pushes), the profile fetcher and
//! the attachment fetcher, each an actor holding its own LINE client.

mod attachments;
mod dispatcher;
mod planner;
mod profiles;
mod send_queue;

pub use attachments::{AttachmentFetcher, FetchAttachment};
pub use dispatcher::{DispatchSettings, Dispatcher};
pub use planner::planner;
pub use profiles::ProfileFetcher;
