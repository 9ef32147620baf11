//! Campaign rows: the campaign, its recipients in row order, and the step that turns a batch
//! of recipients into messages in the same transaction that advances the campaign's cursor
//! (so a restart never makes a recipient's message twice). Counting, cancelling and
//! re-sending act on the campaign's messages, which `MailStore` keeps.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;
use crate::campaigns::{Campaign, CampaignCounts, CampaignId, CampaignRecipient, CampaignState};
use crate::jobs::NewJob;
use crate::mail::{MessageId, NewMail};
use crate::page::{Page, PageRequest};

#[async_trait]
pub trait CampaignStore: Send + Sync {
    /// Records a new campaign with its first recipients (given inline, their addresses
    /// already unique), in one transaction. `recipients` is stored as the number given and
    /// `expanded` as 0, whatever the campaign says.
    async fn insert_campaign(
        &self,
        campaign: Campaign,
        recipients: Vec<CampaignRecipient>,
    ) -> StoreResult<()>;
    async fn get_campaign(&self, id: CampaignId) -> StoreResult<Option<Campaign>>;
    /// Campaigns, newest first; `after` is a campaign id.
    async fn list_campaigns(&self, page: &PageRequest) -> StoreResult<Page<Campaign>>;
    /// The campaigns that are `sending` or `paused`, oldest first.
    async fn started_campaigns(&self) -> StoreResult<Vec<CampaignId>>;
    /// Adds recipients to an `importing` campaign, skipping any whose address the campaign
    /// already has (compared case-insensitively, also within `recipients`; addresses are bare,
    /// `a@b`): answers the rows
    /// skipped, and counts the rest into `recipients`. `None` (nothing added) when the
    /// campaign is missing or not `importing`.
    async fn add_recipients(
        &self,
        id: CampaignId,
        recipients: Vec<CampaignRecipient>,
    ) -> StoreResult<Option<Vec<u64>>>;
    /// Recipients with a row after `after`, in row order, at most `limit`.
    async fn campaign_recipients(
        &self,
        id: CampaignId,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<CampaignRecipient>>;
    /// Moves a campaign whose state is one of `from` to `campaign.state`, writing its
    /// `template_version`, `import`, `started_at` and `updated_at` too. False (nothing
    /// written) when the campaign is missing or in another state.
    async fn update_campaign(
        &self,
        campaign: &Campaign,
        from: &[CampaignState],
    ) -> StoreResult<bool>;
    /// Stores `mails` as `MailStore::insert_mails` does and moves the campaign's `expanded`
    /// cursor from `from` to `to`, in one transaction. False (nothing stored) when the cursor
    /// is not at `from` or the campaign is not `sending` or `paused`.
    async fn expand_campaign(
        &self,
        id: CampaignId,
        from: u64,
        to: u64,
        mails: Vec<NewMail>,
    ) -> StoreResult<bool>;
    /// The campaign's messages by status, and the suppressions its unsubscribe links made
    /// (reason `unsubscribe`, source `message:{id}` naming one of its messages).
    async fn campaign_counts(&self, id: CampaignId) -> StoreResult<CampaignCounts>;
    /// Cancels the campaign's messages that are still `queued` or `deferred` (a `cancelled`
    /// event each); answers how many.
    async fn cancel_campaign_messages(
        &self,
        id: CampaignId,
        now: OffsetDateTime,
    ) -> StoreResult<u64>;
    /// Puts `failed` messages back to `queued` (a `requeued` event each), each with a new
    /// send job (`jobs[i]` sends `messages[i]`; the message keeps the new job's id), in one
    /// transaction. A message that is not `failed` is left alone and its job not stored.
    /// Answers how many were requeued.
    async fn requeue_messages(
        &self,
        messages: Vec<MessageId>,
        jobs: Vec<NewJob>,
        now: OffsetDateTime,
    ) -> StoreResult<u64>;
}
