//! The jobs on `carafe.campaigns`: importing a campaign's recipients from its file, and
//! making its messages. Both are resumable: the import saves a checkpoint (the last row
//! stored, and the report so far) after every batch, and making messages advances the
//! campaign's cursor in the same transaction that stores each batch — a job rescued after a
//! crash carries on where the last commit left it, and a stale worker's batch is refused.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use carafe_core::campaigns::{Campaign, CampaignId, CampaignState, ImportReport};
use carafe_core::jobs::Progress;
use carafe_core::mail::{MailId, MessageId, NewMail};
use carafe_core::time::now;
use serde_json::{Value, json};

use super::import::{self, Batch};
use super::{Mailer, merged, relay_of};
use crate::context::Actor;
use crate::jobs::queue_topic;
use crate::jobs::runner::{JobContext, JobError, JobHandler};
use crate::mail::Error;
use crate::mail::submit::{SendRequest, campaign_queue, check, send_job};
use crate::mail::templates::TemplateUse;

/// Recipients made into messages per transaction.
const EXPAND_BATCH: u32 = 500;

/// Runs the import and expansion jobs of campaigns.
pub struct CampaignJobs {
    mailer: Arc<Mailer>,
}

impl CampaignJobs {
    pub fn new(mailer: Arc<Mailer>) -> Self {
        CampaignJobs { mailer }
    }
}

fn retry(what: &str, e: impl std::fmt::Display) -> JobError {
    JobError::retry(format!("{what}: {e}"))
}

#[async_trait]
impl JobHandler for CampaignJobs {
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError> {
        let id = ctx
            .args()
            .get("campaign")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<CampaignId>().ok())
            .ok_or_else(|| JobError::abort("not a campaign job"))?;
        let Some(c) = self
            .mailer
            .store()
            .get_campaign(id)
            .await
            .map_err(|e| retry("read", e))?
        else {
            // The job is stored before its campaign: wait a little for it.
            return Err(JobError::Retry {
                message: "no such campaign (yet)".into(),
                after: Some(Duration::from_secs(1)),
            });
        };
        match ctx.args().get("step").and_then(Value::as_str) {
            Some("import") => self.import(c, &ctx).await,
            Some("expand") => self.expand(c, &ctx).await,
            _ => Err(JobError::abort("not a campaign step")),
        }
    }
}

/// The ids of the mail and message for the recipient in `row`: derived from the campaign
/// (its start time and id) and the row, so making a batch twice collides instead of
/// sending twice. They sort like UUIDv7s, by start time, then by row.
fn copy_ids(c: &Campaign, row: u64) -> (MailId, MessageId) {
    let ms = c.started_at.unwrap_or(c.created_at).unix_timestamp_nanos() / 1_000_000;
    let id = c.id.0.as_bytes();
    let make = |kind: u8| {
        let mut tail = [0u8; 10];
        tail[0] = kind;
        tail[1..4].copy_from_slice(&id[13..16]);
        tail[4..10].copy_from_slice(&row.to_be_bytes()[2..8]);
        uuid::Builder::from_unix_timestamp_millis(ms as u64, &tail).into_uuid()
    };
    (MailId(make(0)), MessageId(make(1)))
}

impl CampaignJobs {
    async fn import(&self, c: Campaign, ctx: &JobContext) -> Result<Value, JobError> {
        if c.state != CampaignState::Importing {
            return Ok(json!({"skipped": c.state.as_str()}));
        }
        let store = self.mailer.store().clone();
        let (mut report, done) = match ctx.saved_checkpoint() {
            Some(cp) => (
                serde_json::from_value(cp["report"].clone()).unwrap_or_default(),
                cp["row"].as_u64().unwrap_or(0),
            ),
            None => (ImportReport::default(), 0),
        };
        let content = match (&c.source, self.mailer.files()) {
            (Some(id), Some(files)) => files
                .ready_content(*id)
                .await
                .map_err(|e| retry("reading the file", e))?,
            _ => None,
        };
        let Some(bytes) = content else {
            return self
                .end_import(c, report, Some("the file is no longer available".into()))
                .await;
        };
        // The file is parsed on a blocking thread; batches come back over a channel, so at
        // most two are held at once.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(2);
        let parser = tokio::task::spawn_blocking(move || {
            import::read(&bytes, done, &mut |batch| tx.blocking_send(batch).is_ok())
        });
        let base_rows = report.rows;
        let mut last_row = done;
        while let Some(batch) = rx.recv().await {
            let batch_last = batch
                .recipients
                .iter()
                .map(|r| r.row)
                .chain(batch.bad.iter().map(|b| b.row))
                .max();
            report.rows = base_rows + batch.rows;
            for b in batch.bad {
                report.bad_row(b.row, b.error);
            }
            if !batch.recipients.is_empty() {
                let Some(skipped) = store
                    .add_recipients(c.id, batch.recipients)
                    .await
                    .map_err(|e| retry("storing recipients", e))?
                else {
                    return Ok(json!({"stopped": "the campaign is no longer importing"}));
                };
                for row in skipped {
                    report.bad_row(row, "the address is in an earlier row");
                }
            }
            last_row = batch_last.unwrap_or(last_row).max(last_row);
            ctx.checkpoint(json!({"row": last_row, "report": report}))
                .await?;
            let _ = ctx
                .progress(Progress {
                    current: report.rows,
                    total: None,
                    stage: Some("import".into()),
                    message: None,
                })
                .await;
            self.mailer.campaign_progressed(c.id);
        }
        let parsed = parser.await.map_err(|e| retry("parsing", e))?;
        report.bad.sort_by_key(|b| b.row);
        self.end_import(c, report, parsed.err()).await
    }

    /// Ends the import: `ready` (and started, when asked), or `failed` with `error`.
    async fn end_import(
        &self,
        c: Campaign,
        mut report: ImportReport,
        error: Option<String>,
    ) -> Result<Value, JobError> {
        let store = self.mailer.store();
        let stored = store
            .get_campaign(c.id)
            .await
            .map_err(|e| retry("read", e))?
            .map_or(0, |c| c.recipients);
        let error = error.or_else(|| {
            (stored == 0).then(|| "the file has no rows with a valid address".to_owned())
        });
        let state = match error {
            Some(_) => CampaignState::Failed,
            None => CampaignState::Ready,
        };
        report.error = error;
        let next = Campaign {
            state,
            import: report,
            updated_at: now(),
            ..c.clone()
        };
        let moved = store
            .update_campaign(&next, &[CampaignState::Importing])
            .await
            .map_err(|e| retry("record", e))?;
        self.mailer.campaigns_changed(c.id);
        if moved && state == CampaignState::Ready && c.autostart {
            match self.mailer.start_campaign(c.id).await {
                Ok(_) | Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(retry("starting", e)),
            }
        }
        Ok(json!({"state": state.as_str(), "recipients": stored}))
    }

    async fn expand(&self, mut c: Campaign, ctx: &JobContext) -> Result<Value, JobError> {
        let store = self.mailer.store().clone();
        let mut made = 0u64;
        loop {
            match c.state {
                CampaignState::Sending | CampaignState::Paused => {}
                // Started a moment ago, by a transaction not yet visible here.
                CampaignState::Ready => {
                    return Err(JobError::Retry {
                        message: "the campaign has not started".into(),
                        after: Some(Duration::from_secs(1)),
                    });
                }
                other => return Ok(json!({"stopped": other.as_str(), "made": made})),
            }
            let batch = store
                .campaign_recipients(c.id, c.expanded, EXPAND_BATCH)
                .await
                .map_err(|e| retry("reading recipients", e))?;
            let Some(last) = batch.last().map(|r| r.row) else {
                return Ok(json!({"made": made}));
            };
            let what = TemplateUse {
                name: c.template.clone(),
                version: c.template_version,
                locale: c.locale.clone(),
                data: Value::Null,
            };
            let data = batch.iter().map(|r| merged(&c.data, r)).collect();
            let rendered = match self.mailer.render_batch(&what, data, "/template").await {
                Ok(r) => r,
                Err(Error::Store(e)) => return Err(retry("rendering", e)),
                // The template itself cannot render (deleted since): nothing more can be made.
                Err(e) => return Err(JobError::abort(format!("the template: {e}"))),
            };
            let actor = Actor {
                id: c.actor.clone(),
                request_id: None,
            };
            let mut mails = Vec::with_capacity(batch.len());
            let mut report = c.import.clone();
            for (r, out) in batch.iter().zip(rendered) {
                let rendered = match out {
                    Ok(x) => x,
                    Err(e) => {
                        report.unrendered += 1;
                        report.bad_row(r.row, format!("the template: {}", e.message));
                        continue;
                    }
                };
                let req = SendRequest {
                    from: Some(c.from.clone()),
                    reply_to: c.reply_to.clone(),
                    to: vec![r.email.clone()],
                    subject: Some(rendered.subject),
                    text: rendered.text,
                    html: rendered.html,
                    tags: c.tags.clone(),
                    send_at: c.send_at,
                    unsubscribe: true,
                    campaign: Some({
                        let (m, msg) = copy_ids(&c, r.row);
                        (c.id, m, msg)
                    }),
                    ..Default::default()
                };
                match check(
                    req,
                    Some(rendered.template),
                    Vec::new(),
                    self.mailer.settings(),
                    &actor,
                ) {
                    Ok(checked) => {
                        let jobs = checked
                            .messages
                            .iter()
                            .map(|m| {
                                let settings = self.mailer.settings();
                                send_job(m.id, &checked.mail, relay_of(&c), settings)
                            })
                            .collect();
                        mails.push(NewMail {
                            mail: checked.mail,
                            messages: checked.messages,
                            jobs,
                        });
                    }
                    Err(e) => {
                        report.unrendered += 1;
                        report.bad_row(r.row, format!("the message: {}", refusal(&e)));
                    }
                }
            }
            // Rows that got no message are noted first (a retry notes them again harmlessly:
            // the report is rewritten whole, from the campaign read before this batch).
            if report != c.import {
                let noted = Campaign {
                    import: report,
                    updated_at: now(),
                    ..c.clone()
                };
                let noted_now = store
                    .update_campaign(&noted, &[c.state])
                    .await
                    .map_err(|e| retry("recording rows", e))?;
                if !noted_now {
                    // Paused or cancelled meanwhile: read it again and redo the batch.
                    c = match store
                        .get_campaign(c.id)
                        .await
                        .map_err(|e| retry("read", e))?
                    {
                        Some(c) => c,
                        None => return Ok(json!({"stopped": "deleted", "made": made})),
                    };
                    continue;
                }
            }
            let count = mails.len() as u64;
            let stored = store
                .expand_campaign(c.id, c.expanded, last, mails)
                .await
                .map_err(|e| retry("storing messages", e))?;
            if stored {
                made += count;
                self.mailer
                    .jobs()
                    .bus()
                    .publish(&queue_topic(&campaign_queue(c.id)));
                self.mailer.campaign_progressed(c.id);
                let _ = ctx
                    .progress(Progress {
                        current: last,
                        total: None,
                        stage: Some("messages".into()),
                        message: None,
                    })
                    .await;
            }
            c = match store
                .get_campaign(c.id)
                .await
                .map_err(|e| retry("read", e))?
            {
                Some(c) => c,
                None => return Ok(json!({"stopped": "deleted", "made": made})),
            };
        }
    }
}

/// The first reason a copy was refused.
fn refusal(e: &Error) -> String {
    match e {
        Error::Invalid(fields) | Error::Template(fields) => fields
            .first()
            .map(|f| format!("{} {}", f.field, f.message))
            .unwrap_or_else(|| e.to_string()),
        other => other.to_string(),
    }
}
