//! Campaigns: one template, many recipients, each sent a personalised copy of their own
//! (never BCC). A campaign is created with its recipients inline or from a CSV or XLSX file
//! (read by an import job, bad rows reported by number, `import.rs`); `start` pins the
//! template version and starts a job that turns recipients into messages batch by batch
//! (`expand.rs`), each batch committed with the campaign's cursor, so a restart never sends
//! anybody two copies. Each campaign's messages are sent from a queue of its own
//! (`carafe.campaign.<id>`): pausing is pausing that queue and the campaign's rate is that
//! queue's rate, both kept in the database and obeyed by every instance; `serve.rs` runs the
//! senders of started campaigns' queues. Every copy carries one-click unsubscribe links, and
//! suppressed addresses are always skipped.

mod control;
mod expand;
pub mod import;
mod serve;

pub use expand::CampaignJobs;
pub use serve::serve;

use std::collections::HashMap;
use std::time::Duration;

use carafe_core::campaigns::{
    Campaign, CampaignCounts, CampaignId, CampaignRecipient, CampaignState, ImportReport,
};
use carafe_core::jobs::{Backoff, JobState, NewJob, QueueLimits, QueueName, Unique};
use carafe_core::mail::MessageStatus;
use carafe_core::page::{Page, PageRequest};
use carafe_core::time::now;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::address::parse_mailbox;
use super::submit::{SendRequest, campaign_queue_name, check};
use super::templates::TemplateUse;
use super::{CAMPAIGNS_QUEUE, Error, Mailer};
use crate::context::{Actor, FieldError, Principal};

/// Most recipients given inline (a file takes more).
pub const MAX_INLINE_RECIPIENTS: usize = 10_000;
/// The largest recipients file, and the most data rows it may have.
pub const MAX_IMPORT_BYTES: u64 = 64 * 1024 * 1024;
pub const MAX_IMPORT_ROWS: u64 = 1_000_000;
/// The fastest rate a campaign may ask for, in messages per second.
pub const MAX_RATE: f64 = 10_000.0;
const MAX_NAME: usize = 200;
/// The lease of a campaign's send jobs: sends of an instance that dies are taken up by
/// another this soon (a live sender renews it every third of it).
pub const SEND_LEASE: Duration = Duration::from_secs(15);

/// The bus topic announced when started campaigns change (their queues' senders re-check).
pub(crate) const CAMPAIGNS_TOPIC: &str = "mail.campaigns";

/// The bus topic announced when something about campaign `id` changed (its progress).
pub fn campaign_topic(id: CampaignId) -> String {
    format!("mail.campaign.{id}")
}

/// One recipient given inline.
#[derive(Debug, Clone)]
pub struct RecipientSpec {
    pub email: String,
    /// A JSON object the template sees (over the campaign's `data`).
    pub data: Option<Value>,
}

/// What a client asks for.
#[derive(Debug, Clone)]
pub struct CampaignRequest {
    pub name: String,
    /// The template; its `data` is what every recipient's copy sees.
    pub template: TemplateUse,
    pub from: Option<String>,
    pub reply_to: Option<String>,
    pub tags: Vec<String>,
    pub recipients: Option<Vec<RecipientSpec>>,
    /// A Carafe file (CSV or XLSX) to read the recipients from.
    pub file_id: Option<String>,
    pub send_at: Option<OffsetDateTime>,
    pub rate: Option<f64>,
    /// The relay to send through (`mail.relays`); `None`: `default`.
    pub relay: Option<String>,
    /// Start at once (or as soon as the import ends).
    pub start: bool,
}

/// A campaign with its counts.
#[derive(Debug, Clone)]
pub struct CampaignView {
    pub campaign: Campaign,
    pub counts: CampaignCounts,
}

impl CampaignView {
    /// The state to show: a started campaign whose every recipient has a message and none is
    /// waiting or being sent any more is `completed`.
    pub fn state(&self) -> &'static str {
        let c = &self.campaign;
        let waiting = [
            MessageStatus::Queued,
            MessageStatus::Sending,
            MessageStatus::Deferred,
        ]
        .iter()
        .map(|s| self.counts.status(*s))
        .sum::<u64>();
        let all_made = self.counts.messages() + c.import.unrendered >= c.recipients;
        if c.state == CampaignState::Sending && all_made && waiting == 0 {
            "completed"
        } else {
            c.state.as_str()
        }
    }
}

/// The relay campaign `c`'s messages go out through.
pub(crate) fn relay_of(c: &Campaign) -> &str {
    c.relay.as_deref().unwrap_or(crate::mail::relays::DEFAULT)
}

/// `data` (an object) over `shared`, with `email` set when the recipient's data has none.
pub(crate) fn merged(shared: &Value, r: &CampaignRecipient) -> Value {
    let mut out = shared.as_object().cloned().unwrap_or_default();
    if let Some(own) = r.data.as_object() {
        out.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out.entry("email")
        .or_insert_with(|| Value::from(r.email.clone()));
    Value::Object(out)
}

/// The job that imports or expands campaign `id`: one of each at a time (a unique key).
fn step_job(id: CampaignId, step: &str, at: OffsetDateTime) -> NewJob {
    NewJob {
        queue: QueueName::parse(CAMPAIGNS_QUEUE).expect("valid queue name"),
        args: json!({"campaign": id, "step": step}),
        priority: 2,
        max_attempts: 25,
        backoff: Some(Backoff::Exponential {
            base_ms: 500,
            max_ms: 60_000,
            jitter: 0.2,
        }),
        timeout: Duration::from_secs(3600),
        scheduled_at: at,
        unique: Some(Unique {
            key: format!("campaign:{id}:{step}"),
            states: JobState::LIVE.to_vec(),
            period: None,
        }),
        owner: None,
        target: None,
        created_at: at,
    }
}

fn conflict(code: &'static str, c: &Campaign, what: &str) -> Error {
    Error::Conflict {
        code,
        message: format!("the campaign is {}: {what}", c.state.as_str()),
    }
}

impl Mailer {
    /// Checks and stores a campaign; with a file, its import starts at once.
    pub async fn create_campaign(
        &self,
        req: CampaignRequest,
        actor: &Actor,
        principal: &Principal,
    ) -> Result<CampaignView, Error> {
        let mut errors = Vec::new();
        let name = req.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control)
        {
            errors.push(FieldError::new(
                "/name",
                format!("1-{MAX_NAME} characters, no control characters"),
            ));
        }
        if self.links().is_none() {
            errors.push(FieldError::new(
                "/",
                "campaigns need unsubscribe links, which are not available on this server",
            ));
        }
        if let Some(rate) = req.rate
            && !(rate > 0.0 && rate <= MAX_RATE)
        {
            errors.push(FieldError::new(
                "/rate",
                format!("messages per second, more than 0 and at most {MAX_RATE}"),
            ));
        }
        if let Some(relay) = &req.relay
            && self.relays().get(relay).is_none()
        {
            errors.push(FieldError::new(
                "/relay",
                format!("no relay named {relay:?} is configured (mail.relays)"),
            ));
        }
        let shared = match &req.template.data {
            Value::Null => json!({}),
            d if d.is_object() => d.clone(),
            _ => {
                errors.push(FieldError::new("/template/data", "a JSON object"));
                json!({})
            }
        };
        // The envelope is checked as a send request would be (a placeholder recipient and body).
        let sample = SendRequest {
            from: req.from.clone(),
            reply_to: req.reply_to.clone(),
            to: vec!["recipient@example.com".into()],
            subject: Some("-".into()),
            text: Some("-".into()),
            tags: req.tags.clone(),
            send_at: req.send_at,
            unsubscribe: true,
            ..Default::default()
        };
        let from = match check(sample, None, Vec::new(), self.settings(), actor) {
            Ok(c) => Some((c.mail.from, c.mail.reply_to)),
            Err(Error::Invalid(more)) => {
                errors.extend(more);
                None
            }
            Err(e) => return Err(e),
        };
        let mut report = ImportReport::default();
        let (recipients, source) = match (&req.recipients, &req.file_id) {
            (Some(list), None) => (inline(list, &mut report, &mut errors), None),
            (None, Some(id)) => match self.attachable_file(id, principal).await? {
                Ok(f) if f.size > MAX_IMPORT_BYTES => {
                    errors.push(FieldError::new(
                        "/file_id",
                        format!("the file is larger than {MAX_IMPORT_BYTES} bytes"),
                    ));
                    (Vec::new(), None)
                }
                Ok(f) => (Vec::new(), Some(f.id)),
                Err(m) => {
                    errors.push(FieldError::new("/file_id", m));
                    (Vec::new(), None)
                }
            },
            _ => {
                errors.push(FieldError::new(
                    "/recipients",
                    "give either recipients or file_id",
                ));
                (Vec::new(), None)
            }
        };
        let (Some((from, reply_to)), true) = (from, errors.is_empty()) else {
            return Err(Error::Invalid(errors));
        };
        // The template must render: for the first recipient when they are given, else it
        // must at least compile in the locale asked for.
        let sample: Vec<Value> = recipients
            .first()
            .map(|r| merged(&shared, r))
            .into_iter()
            .collect();
        let rendered = self
            .render_batch(&req.template, sample, "/template")
            .await?;
        if let Some(Err(e)) = rendered.first() {
            return Err(Error::Template(vec![
                FieldError::new(
                    "/template",
                    format!("{} (rendering for recipients/0)", e.message),
                )
                .at(e.line, e.column),
            ]));
        }
        let at = now();
        let campaign = Campaign {
            id: CampaignId::new(),
            name,
            template: req.template.name.clone(),
            template_version: req.template.version,
            locale: req.template.locale.clone(),
            from,
            reply_to,
            tags: req.tags,
            data: shared,
            rate: req.rate,
            relay: req.relay,
            send_at: req.send_at,
            autostart: req.start,
            state: match source {
                Some(_) => CampaignState::Importing,
                None => CampaignState::Ready,
            },
            source,
            recipients: recipients.len() as u64,
            expanded: 0,
            import: report,
            actor: actor.id.clone(),
            created_at: at,
            updated_at: at,
            started_at: None,
        };
        let id = campaign.id;
        if source.is_some() {
            // The import job is stored first: it waits for the campaign if it runs before the
            // campaign is stored, and gives up if it never is.
            self.jobs()
                .enqueue(vec![step_job(id, "import", at)])
                .await?;
        }
        self.store().insert_campaign(campaign, recipients).await?;
        if req.start && source.is_none() {
            return self.start_campaign(id).await;
        }
        self.campaign(id).await
    }

    pub async fn campaign(&self, id: CampaignId) -> Result<CampaignView, Error> {
        let campaign = self
            .store()
            .get_campaign(id)
            .await?
            .ok_or(Error::NotFound)?;
        let counts = self.store().campaign_counts(id).await?;
        Ok(CampaignView { campaign, counts })
    }

    /// Campaigns, newest first (without counts: `campaign` has them).
    pub async fn campaigns(&self, page: &PageRequest) -> Result<Page<Campaign>, Error> {
        Ok(self.store().list_campaigns(page).await?)
    }

    /// Starts a `ready` campaign: pins its template version, sets its queue's rate, and
    /// starts making its messages.
    pub async fn start_campaign(&self, id: CampaignId) -> Result<CampaignView, Error> {
        let c = self
            .store()
            .get_campaign(id)
            .await?
            .ok_or(Error::NotFound)?;
        match c.state {
            CampaignState::Ready => {}
            CampaignState::Importing => {
                return Err(conflict(
                    "campaign_importing",
                    &c,
                    "create it with \"start\": true to start when the import ends",
                ));
            }
            CampaignState::Sending | CampaignState::Paused => {
                return Err(conflict("campaign_started", &c, "it has already started"));
            }
            CampaignState::Cancelled | CampaignState::Failed => {
                return Err(conflict("campaign_ended", &c, "it cannot start"));
            }
        }
        let version = match c.template_version {
            Some(v) => v,
            None => {
                let t = self.store().get_template(&c.template, None).await?;
                let Some(t) = t else {
                    return Err(Error::Invalid(vec![FieldError::new(
                        "/template",
                        format!("the template {:?} no longer exists", c.template),
                    )]));
                };
                t.version
            }
        };
        let queue = campaign_queue_name(id);
        let limits = QueueLimits {
            rate_per_second: c.rate,
            concurrency: None,
            lease: Some(SEND_LEASE),
        };
        self.jobs().set_limits(&queue, limits).await?;
        // The campaign shares its relay's rate with everything else sent through it.
        let relay = self.relays().get(relay_of(&c)).ok_or_else(|| {
            Error::Invalid(vec![FieldError::new(
                "/relay",
                format!("the relay {:?} is no longer configured", relay_of(&c)),
            )])
        })?;
        let group = relay.group.as_ref().map(|g| g.name.as_str());
        self.jobs().set_rate_group(&queue, group).await?;
        self.jobs().set_paused(&queue, false).await?;
        let at = now();
        let started = Campaign {
            state: CampaignState::Sending,
            template_version: Some(version),
            started_at: Some(at),
            updated_at: at,
            ..c.clone()
        };
        if !self
            .store()
            .update_campaign(&started, &[CampaignState::Ready])
            .await?
        {
            return Err(conflict("campaign_started", &c, "it changed meanwhile"));
        }
        self.jobs()
            .enqueue(vec![step_job(id, "expand", at)])
            .await?;
        self.campaigns_changed(id);
        self.campaign(id).await
    }

    /// Waits up to `wait` for campaign `id` to change on this instance (others are seen when
    /// the wait ends).
    pub async fn campaign_wait(&self, id: CampaignId, wait: Duration) {
        let mut woken = self.jobs().bus().subscribe();
        woken.wait_for(&campaign_topic(id), wait).await;
    }

    /// Tells this instance's campaign senders and progress watchers that `id` changed state.
    pub(crate) fn campaigns_changed(&self, id: CampaignId) {
        self.jobs().bus().publish(CAMPAIGNS_TOPIC);
        self.campaign_progressed(id);
    }

    /// Tells this instance's progress watchers that `id` made progress.
    pub(crate) fn campaign_progressed(&self, id: CampaignId) {
        self.jobs().bus().publish(&campaign_topic(id));
    }
}

/// Inline recipients, checked: addresses parsed (the bare address is kept), data objects,
/// each address once (a repeat is reported as a bad row, not an error).
fn inline(
    list: &[RecipientSpec],
    report: &mut ImportReport,
    errors: &mut Vec<FieldError>,
) -> Vec<CampaignRecipient> {
    if list.is_empty() || list.len() > MAX_INLINE_RECIPIENTS {
        errors.push(FieldError::new(
            "/recipients",
            format!("1-{MAX_INLINE_RECIPIENTS} recipients (use a file for more)"),
        ));
        return Vec::new();
    }
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let row = i as u64 + 1;
        report.rows += 1;
        let email = match parse_mailbox(&r.email) {
            Ok(m) => m.email.to_string(),
            Err(e) => {
                errors.push(FieldError::new(
                    format!("/recipients/{i}/email"),
                    e.to_string(),
                ));
                continue;
            }
        };
        let data = match &r.data {
            None | Some(Value::Null) => json!({}),
            Some(d) if d.is_object() => d.clone(),
            Some(_) => {
                errors.push(FieldError::new(
                    format!("/recipients/{i}/data"),
                    "a JSON object",
                ));
                continue;
            }
        };
        if let Some(first) = seen.get(&email.to_lowercase()) {
            report.bad_row(
                row,
                format!("the address is given more than once (first in row {first})"),
            );
            continue;
        }
        seen.insert(email.to_lowercase(), row);
        out.push(CampaignRecipient { row, email, data });
    }
    out
}
