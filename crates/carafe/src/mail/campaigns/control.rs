//! Steering a started campaign: pause and resume (its queue, so every instance obeys at
//! once), cancel (its waiting messages and their jobs), and resending its failed messages.

use carafe_core::campaigns::{Campaign, CampaignId, CampaignState};
use carafe_core::jobs::{JobFilter, JobState};
use carafe_core::mail::{MessageFilter, MessageStatus};
use carafe_core::page::PageRequest;
use carafe_core::time::now;

use super::{CampaignView, conflict};
use crate::jobs::queue_topic;
use crate::mail::submit::{campaign_queue_name, send_job_at};
use crate::mail::{Error, Mailer};

impl Mailer {
    /// Pauses a sending campaign: its queue stops at once on every instance (a message
    /// already handed to the relay still completes). Pausing a paused campaign is fine.
    pub async fn pause_campaign(&self, id: CampaignId) -> Result<CampaignView, Error> {
        self.pause_or_resume(id, true).await
    }

    pub async fn resume_campaign(&self, id: CampaignId) -> Result<CampaignView, Error> {
        self.pause_or_resume(id, false).await
    }

    async fn pause_or_resume(&self, id: CampaignId, pause: bool) -> Result<CampaignView, Error> {
        let c = self
            .store()
            .get_campaign(id)
            .await?
            .ok_or(Error::NotFound)?;
        let (from, to) = match pause {
            true => (CampaignState::Sending, CampaignState::Paused),
            false => (CampaignState::Paused, CampaignState::Sending),
        };
        if c.state == to {
            return self.campaign(id).await;
        }
        if c.state != from {
            let what = if pause {
                "only a sending campaign pauses"
            } else {
                "only a paused campaign resumes"
            };
            return Err(conflict("campaign_state", &c, what));
        }
        let queue = campaign_queue_name(id);
        // Pause the queue before the state says so, resume it after: a reader that sees
        // `paused` never sees a message start after it.
        if pause {
            self.jobs().set_paused(&queue, true).await?;
        }
        let next = Campaign {
            state: to,
            updated_at: now(),
            ..c.clone()
        };
        if !self.store().update_campaign(&next, &[from]).await? {
            return Err(conflict("campaign_state", &c, "it changed meanwhile"));
        }
        if !pause {
            self.jobs().set_paused(&queue, false).await?;
        }
        self.campaigns_changed(id);
        self.campaign(id).await
    }

    /// Cancels a campaign: no more messages are made, and those not yet sent never will be.
    pub async fn cancel_campaign(&self, id: CampaignId) -> Result<CampaignView, Error> {
        let c = self
            .store()
            .get_campaign(id)
            .await?
            .ok_or(Error::NotFound)?;
        if c.state == CampaignState::Cancelled {
            return self.campaign(id).await;
        }
        let live = [
            CampaignState::Importing,
            CampaignState::Ready,
            CampaignState::Sending,
            CampaignState::Paused,
        ];
        let next = Campaign {
            state: CampaignState::Cancelled,
            updated_at: now(),
            ..c.clone()
        };
        if !self.store().update_campaign(&next, &live).await? {
            return Err(conflict("campaign_state", &c, "it cannot be cancelled"));
        }
        self.store().cancel_campaign_messages(id, now()).await?;
        self.cancel_queued_jobs(id).await?;
        self.campaigns_changed(id);
        self.campaign(id).await
    }

    /// Cancels the send jobs still waiting in a cancelled campaign's queue (their messages
    /// are cancelled already; nobody serves the queue any more).
    async fn cancel_queued_jobs(&self, id: CampaignId) -> Result<(), Error> {
        let queue = campaign_queue_name(id);
        for state in [
            JobState::Available,
            JobState::Scheduled,
            JobState::Retryable,
        ] {
            loop {
                let filter = JobFilter {
                    queue: Some(queue.clone()),
                    state: Some(state),
                    ..Default::default()
                };
                let page = self.jobs().list(&filter, &PageRequest::first(500)).await?;
                if page.items.is_empty() {
                    break;
                }
                for job in page.items {
                    self.jobs().cancel(job.id).await?;
                }
            }
        }
        Ok(())
    }

    /// Sends the campaign's failed messages again (each gets a new send job); answers how
    /// many. Only while the campaign is sending or paused.
    pub async fn resend_failed(&self, id: CampaignId) -> Result<(CampaignView, u64), Error> {
        let c = self
            .store()
            .get_campaign(id)
            .await?
            .ok_or(Error::NotFound)?;
        if !c.state.is_started() {
            return Err(conflict(
                "campaign_state",
                &c,
                "only a started campaign resends",
            ));
        }
        let queue = campaign_queue_name(id);
        let filter = MessageFilter {
            campaign: Some(id),
            status: Some(MessageStatus::Failed),
            ..Default::default()
        };
        // Page by page: a requeued message leaves the filter, the keyset cursor goes on.
        let at = now();
        let mut requeued = 0;
        let mut page = PageRequest::first(500);
        loop {
            let found = self.store().list_messages(&filter, &page).await?;
            let ids: Vec<_> = found.items.iter().map(|m| m.id).collect();
            let jobs = ids
                .iter()
                .map(|m| {
                    let relay = super::relay_of(&c);
                    send_job_at(*m, queue.clone(), relay, at, at, self.settings())
                })
                .collect();
            requeued += self.store().requeue_messages(ids, jobs, at).await?;
            match found.next_after {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        self.jobs().bus().publish(&queue_topic(queue.as_str()));
        self.campaigns_changed(id);
        Ok((self.campaign(id).await?, requeued))
    }
}
