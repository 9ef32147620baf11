//! The `Mailer` service: what the API's mail and outbox routes call. A submission is checked,
//! then stored with one message and one send job per recipient in one transaction (shared,
//! through group commit, with the mail accepted at the same moment), so an accepted mail is
//! never lost; reading, cancelling and the outbox go through here too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use carafe_core::mail::{
    FinishSending, Mail, MailId, Message, MessageEvent, MessageFilter, MessageId, NewMail,
    OutboxEntry, OutboxFilter, OutboxId, OutboxItem, SendOutcome,
};
use carafe_core::page::{Page, PageRequest};
use carafe_core::time::now;
use carafe_core::{Store, StoreResult};
use lettre::message::dkim::DkimConfig;

use super::relays::Relays;
use super::submit::{SendRequest, check, send_job};
use super::unsubscribe::Links;
use super::{Error, OUTBOX_TOPIC, Settings};
use crate::context::{Actor, FieldError, Principal};
use crate::files::Files;
use crate::group_commit::{BatchWrite, GroupCommit};
use crate::jobs::{Jobs, queue_topic};

pub struct Mailer {
    store: Arc<dyn Store>,
    jobs: Arc<Jobs>,
    settings: Settings,
    /// Where messages go out, by relay name (`default`'s may be the outbox).
    relays: Relays,
    /// Signs every message going out (and captured), when configured.
    dkim: Option<DkimConfig>,
    /// Where attached Carafe files are read from (`None` in tools that run without them).
    files: Option<Arc<Files>>,
    /// Makes and checks one-click unsubscribe links (`None`: mail cannot ask for them).
    links: Option<Links>,
    /// Fetches and keeps SNS signing certificates (SES webhooks).
    certificates: super::feedback::Certificates,
    /// Accepted mail shares commits with the mail accepted at the same time.
    inserts: GroupCommit<NewMail, Vec<Message>>,
    /// Send attempts share commits with those starting, or ending, at the same time.
    starts: GroupCommit<MessageId, Option<(Mail, Message)>>,
    finishes: GroupCommit<FinishSending, Option<Message>>,
}

/// Writes accepted mail in batches (see `group_commit`).
struct InsertMails(Arc<dyn Store>);

#[async_trait]
impl BatchWrite<NewMail, Vec<Message>> for InsertMails {
    async fn write(&self, items: &[NewMail]) -> StoreResult<Vec<Vec<Message>>> {
        self.0.insert_mails(items.to_vec()).await
    }
}

/// The most mails one commit holds.
const INSERT_BATCH: usize = 256;

/// Starts send attempts in batches: sends starting at the same time share a commit.
struct StartSends(Arc<dyn Store>);

#[async_trait]
impl BatchWrite<MessageId, Option<(Mail, Message)>> for StartSends {
    async fn write(&self, ids: &[MessageId]) -> StoreResult<Vec<Option<(Mail, Message)>>> {
        self.0.start_sendings(ids, now()).await
    }
}

/// Ends send attempts in batches: sends ending at the same time share a commit.
struct FinishSends(Arc<dyn Store>);

#[async_trait]
impl BatchWrite<FinishSending, Option<Message>> for FinishSends {
    async fn write(&self, items: &[FinishSending]) -> StoreResult<Vec<Option<Message>>> {
        self.0.finish_sendings(items.to_vec()).await
    }
}

/// The most send attempts one commit starts or ends.
const SEND_BATCH: usize = 128;

/// A mail with its recipients' messages.
#[derive(Debug, Clone)]
pub struct Submission {
    pub mail: Mail,
    pub messages: Vec<Message>,
}

impl Mailer {
    /// The service; fails when the configured relay cannot be set up (a bad URL or CA file).
    pub fn new(
        store: Arc<dyn Store>,
        jobs: Arc<Jobs>,
        files: Option<Arc<Files>>,
        links: Option<Links>,
        settings: Settings,
    ) -> Result<Self, String> {
        let relays = Relays::new(&settings)?;
        let dkim = settings.dkim()?;
        let inserts = GroupCommit::spawn("mail", INSERT_BATCH, InsertMails(store.clone()));
        let starts = GroupCommit::spawn("mail.start", SEND_BATCH, StartSends(store.clone()));
        let finishes = GroupCommit::spawn("mail.finish", SEND_BATCH, FinishSends(store.clone()));
        Ok(Mailer {
            inserts,
            starts,
            finishes,
            store,
            jobs,
            settings,
            relays,
            dkim,
            files,
            links,
            certificates: Default::default(),
        })
    }

    pub(super) fn links(&self) -> Option<&Links> {
        self.links.as_ref()
    }

    pub(super) fn files(&self) -> Option<&Arc<Files>> {
        self.files.as_ref()
    }

    pub(super) fn certificates(&self) -> &super::feedback::Certificates {
        &self.certificates
    }

    pub fn relays(&self) -> &Relays {
        &self.relays
    }

    pub(super) fn dkim(&self) -> Option<&DkimConfig> {
        self.dkim.as_ref()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(super) fn jobs(&self) -> &Arc<Jobs> {
        &self.jobs
    }

    pub(super) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Starts a send attempt (`MailStore::start_sending`), sharing the commit with others.
    pub(super) async fn start_sending(
        &self,
        id: MessageId,
    ) -> StoreResult<Option<(Mail, Message)>> {
        Ok(self.starts.write(vec![id]).await?.pop().flatten())
    }

    /// Ends a send attempt (`MailStore::finish_sending`), sharing the commit with others.
    pub(super) async fn finish_sending(
        &self,
        id: MessageId,
        outcome: SendOutcome,
        outbox: Option<OutboxEntry>,
    ) -> StoreResult<Option<Message>> {
        let item = FinishSending {
            id,
            outcome,
            outbox,
        };
        Ok(self.finishes.write(vec![item]).await?.pop().flatten())
    }

    /// Tells waiting outbox readers on this instance that something arrived.
    pub(super) fn captured(&self) {
        self.jobs.bus().publish(OUTBOX_TOPIC);
    }

    /// Accepts a mail: rendered from its template (if it names one), checked, then stored with its messages and their send jobs.
    pub async fn send(
        &self,
        mut req: SendRequest,
        actor: &Actor,
        principal: &Principal,
    ) -> Result<Submission, Error> {
        let mut template = None;
        if let Some(what) = req.template.take() {
            if req.subject.is_some() || req.text.is_some() || req.html.is_some() {
                return Err(Error::Invalid(vec![FieldError::new(
                    "/template",
                    "give either a template or subject, text and html",
                )]));
            }
            let rendered = self.render(&what, "/template").await?;
            (req.subject, req.text, req.html) =
                (Some(rendered.subject), rendered.text, rendered.html);
            template = Some(rendered.template);
        }
        let mut errors = Vec::new();
        let relay = req
            .relay
            .take()
            .unwrap_or_else(|| super::relays::DEFAULT.to_owned());
        if self.relays.get(&relay).is_none() {
            errors.push(FieldError::new(
                "/relay",
                format!("no relay named {relay:?} is configured (mail.relays)"),
            ));
        }
        let specs = [
            ("attachments", &req.attachments[..]),
            ("inline", &req.inline[..]),
        ];
        let attachments = self
            .check_attachments(&specs, principal, &mut errors)
            .await?;
        if req.unsubscribe && self.links.is_none() {
            errors.push(FieldError::new(
                "/unsubscribe",
                "unsubscribe links are not available on this server",
            ));
        }
        let checked = match check(req, template, attachments, &self.settings, actor) {
            Err(Error::Invalid(mut more)) => {
                more.extend(errors);
                return Err(Error::Invalid(more));
            }
            _ if !errors.is_empty() => return Err(Error::Invalid(errors)),
            other => other?,
        };
        let jobs = checked
            .messages
            .iter()
            .map(|m| send_job(m.id, &checked.mail, &relay, &self.settings))
            .collect();
        let mail = checked.mail;
        let new = NewMail {
            mail: mail.clone(),
            messages: checked.messages,
            jobs,
        };
        let messages = self
            .inserts
            .write(vec![new])
            .await?
            .pop()
            .unwrap_or_default();
        let queue = super::submit::queue_of(&mail, &relay);
        self.jobs.bus().publish(&queue_topic(queue.as_str()));
        Ok(Submission { mail, messages })
    }

    pub async fn get(&self, id: MailId) -> Result<Submission, Error> {
        let mail = self.store.get_mail(id).await?.ok_or(Error::NotFound)?;
        let messages = self.store.mail_messages(id).await?;
        Ok(Submission { mail, messages })
    }

    /// Cancels what has not been sent yet; answers the mail as it now is.
    pub async fn cancel(&self, id: MailId) -> Result<Submission, Error> {
        // An unknown mail has nothing to cancel, and `get` then answers NotFound.
        self.store.cancel_mail(id, now()).await?;
        self.get(id).await
    }

    pub async fn list(
        &self,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> Result<Page<Message>, Error> {
        Ok(self.store.list_messages(filter, page).await?)
    }

    /// A message with its timeline.
    pub async fn message(&self, id: MessageId) -> Result<(Message, Vec<MessageEvent>), Error> {
        let message = self.store.get_message(id).await?.ok_or(Error::NotFound)?;
        let events = self.store.message_events(id).await?;
        Ok((message, events))
    }

    pub async fn outbox(
        &self,
        filter: &OutboxFilter,
        page: &PageRequest,
    ) -> Result<Page<OutboxItem>, Error> {
        Ok(self.store.list_outbox(filter, page).await?)
    }

    /// Like `outbox`, but when the page would be empty, waits up to `wait` for an item to
    /// arrive (long-poll, for tests that wait for an email). Captures on this instance wake the
    /// wait at once; others are seen within a second.
    pub async fn outbox_wait(
        &self,
        filter: &OutboxFilter,
        page: &PageRequest,
        wait: Duration,
    ) -> Result<Page<OutboxItem>, Error> {
        let deadline = Instant::now() + wait;
        loop {
            let mut woken = self.jobs.bus().subscribe();
            let found = self.outbox(filter, page).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            if !found.items.is_empty() || left.is_zero() {
                return Ok(found);
            }
            woken
                .wait_for(OUTBOX_TOPIC, left.min(Duration::from_secs(1)))
                .await;
        }
    }

    pub async fn outbox_entry(&self, id: OutboxId) -> Result<OutboxEntry, Error> {
        self.store.get_outbox(id).await?.ok_or(Error::NotFound)
    }

    /// Deletes one outbox item, or all of them; how many went.
    pub async fn clear_outbox(&self, id: Option<OutboxId>) -> Result<u64, Error> {
        let gone = self.store.delete_outbox(id).await?;
        if id.is_some() && gone == 0 {
            return Err(Error::NotFound);
        }
        Ok(gone)
    }
}
