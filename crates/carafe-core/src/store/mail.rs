//! Mail rows: a submission with one message per recipient, each written with the job that
//! sends it (one transaction, so no accepted message is ever left without its job), the
//! messages' state machine with its append-only timeline, and the outbox.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;
use crate::jobs::NewJob;
use crate::mail::{
    Feedback, FinishSending, Mail, MailId, Message, MessageEvent, MessageFilter, MessageId,
    MessageRef, NewMail, NewMessage, OutboxEntry, OutboxFilter, OutboxId, OutboxItem, SendOutcome,
    Suppression,
};
use crate::page::{Page, PageRequest};

#[async_trait]
pub trait MailStore: Send + Sync {
    /// Records `mail` and its recipients' messages, `queued`, each with its `queued` event and
    /// its job (`jobs[i]` sends `messages[i]`; the message keeps the job's id). Returns the
    /// messages as stored, in order.
    async fn insert_mail(
        &self,
        mail: Mail,
        messages: Vec<NewMessage>,
        jobs: Vec<NewJob>,
    ) -> StoreResult<Vec<Message>> {
        let mut stored = self
            .insert_mails(vec![NewMail {
                mail,
                messages,
                jobs,
            }])
            .await?;
        Ok(stored.pop().unwrap_or_default())
    }
    /// Records several mails as `insert_mail` does, all in one transaction (one commit for
    /// many small submissions): all are stored or none is. Returns each mail's messages, in
    /// the order given.
    async fn insert_mails(&self, mails: Vec<NewMail>) -> StoreResult<Vec<Vec<Message>>>;
    async fn get_mail(&self, id: MailId) -> StoreResult<Option<Mail>>;
    /// A mail's messages, in the order they were given.
    async fn mail_messages(&self, id: MailId) -> StoreResult<Vec<Message>>;
    async fn get_message(&self, id: MessageId) -> StoreResult<Option<Message>>;
    /// Messages, newest first; `after` is a message id.
    async fn list_messages(
        &self,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Message>>;
    /// A message's timeline, oldest first.
    async fn message_events(&self, id: MessageId) -> StoreResult<Vec<MessageEvent>>;

    /// Starts send attempts, all in one transaction: each `queued` or `deferred` message
    /// becomes `sending` (attempts + 1, a `sending` event). One answer per id, in order: `None`
    /// (nothing changes) for a message in any other state, or missing — a cancelled message
    /// is never sent; an id named twice starts once.
    async fn start_sendings(
        &self,
        ids: &[MessageId],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Option<(Mail, Message)>>>;
    /// `start_sendings` for one message.
    async fn start_sending(
        &self,
        id: MessageId,
        now: OffsetDateTime,
    ) -> StoreResult<Option<(Mail, Message)>> {
        Ok(self.start_sendings(&[id], now).await?.pop().flatten())
    }
    /// Ends send attempts, all in one transaction: each `sending` message gets its outcome
    /// (status, reply and event) and its outbox capture, if any. One answer per item, in
    /// order: `None` (nothing changes) when the message is not `sending`.
    async fn finish_sendings(&self, items: Vec<FinishSending>)
    -> StoreResult<Vec<Option<Message>>>;
    /// `finish_sendings` for one message.
    async fn finish_sending(
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
        Ok(self.finish_sendings(vec![item]).await?.pop().flatten())
    }
    /// Cancels a mail's messages that are still `queued` or `deferred` (a `cancelled` event
    /// each); returns the messages cancelled now.
    async fn cancel_mail(&self, id: MailId, now: OffsetDateTime) -> StoreResult<Vec<Message>>;

    /// The message a report names: the one to `r.recipient` (compared lowercased) the relay
    /// gave `r.relay_id`, else the one to `r.recipient` whose mail carries `r.message_id`;
    /// the newest when several match. `None` when neither key is given or nothing matches.
    async fn find_message(&self, r: &MessageRef) -> StoreResult<Option<Message>>;
    /// Appends `feedback` to message `id`'s timeline (its `data` with `event_id` added) and,
    /// when it names a status and the message is `sent`, moves the message there — one
    /// transaction. `None` (nothing changes) when the message is missing or its timeline
    /// already holds an entry with the same `event_id`.
    async fn record_feedback(
        &self,
        id: MessageId,
        feedback: Feedback,
    ) -> StoreResult<Option<Message>>;

    /// Outbox items, newest first; `after` is an outbox id.
    async fn list_outbox(
        &self,
        filter: &OutboxFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<OutboxItem>>;
    async fn get_outbox(&self, id: OutboxId) -> StoreResult<Option<OutboxEntry>>;
    /// Removes one item (`Some(id)`) or every item (`None`); returns how many went.
    async fn delete_outbox(&self, id: Option<OutboxId>) -> StoreResult<u64>;

    /// Adds a suppression (its address already lowercased). An address already suppressed
    /// keeps its first entry; the answer is the stored entry and whether it was added now.
    async fn put_suppression(&self, entry: Suppression) -> StoreResult<(Suppression, bool)>;
    /// The suppression of `address` (lowercased), if any.
    async fn get_suppression(&self, address: &str) -> StoreResult<Option<Suppression>>;
    /// Suppressions in address order; `after` is an address.
    async fn list_suppressions(&self, page: &PageRequest) -> StoreResult<Page<Suppression>>;
    /// Removes the suppression of `address` (lowercased); false when there was none.
    async fn delete_suppression(&self, address: &str) -> StoreResult<bool>;
}
