//! The mail capability: transactional sends kept as one message per recipient, sent by jobs on
//! Carafe's `carafe.mail` queue, and — with no relay configured — captured in the outbox.
//! `address` and `build` are the pure part (strict address parsing, MIME on `lettre`);
//! `submit` checks a request, `service` is what the API calls, `deliver` runs the send jobs,
//! `read` shows a stored message as a mail client would; `templates` keeps and renders templates;
//! `feedback` takes what providers report after sending (bounces, complaints, deliveries).

pub mod address;
pub mod attach;
pub mod build;
pub mod campaigns;
mod deliver;
mod dkim;
mod error;
pub mod feedback;
pub mod read;
mod relay;
pub mod relays;
mod service;
mod settings;
mod submit;
pub mod suppressions;
pub mod templates;
pub mod unsubscribe;

pub use attach::AttachmentSpec;
pub use deliver::MailJobs;
pub use error::Error;
pub use service::{Mailer, Submission};
pub use settings::Settings;
pub use submit::{SendRequest, campaign_queue};

/// Carafe's own queue for sending mail.
pub const QUEUE: &str = "carafe.mail";
/// Each campaign's messages are sent from a queue of its own, named with this prefix.
pub const CAMPAIGN_QUEUE_PREFIX: &str = "carafe.campaign.";
/// Campaign imports and the making of campaigns' messages run here.
pub const CAMPAIGNS_QUEUE: &str = "carafe.campaigns";

/// The bus topic announced when a message lands in the outbox (for long-polling readers).
pub(crate) const OUTBOX_TOPIC: &str = "mail.outbox";
