//! Campaigns as the stores keep them: one template sent to many recipients, each getting a
//! personalised copy of their own (a `Mail` with one message, marked with the campaign). The
//! recipients are stored first — given inline or imported from a CSV or XLSX file — and turned
//! into messages in order, batch by batch, each batch in the same transaction that advances
//! the campaign's `expanded` cursor: a campaign restarted after a crash carries on where its
//! last batch committed and nobody gets two copies.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::files::FileId;
pub use crate::mail::CampaignId;
use crate::mail::MessageStatus;

/// Where a campaign is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CampaignState {
    /// Its recipients are being read from a file.
    Importing,
    /// Recipients stored; waiting for `start`.
    Ready,
    /// Started: messages are being made and sent.
    Sending,
    /// Started, then paused: nothing more is sent until it is resumed.
    Paused,
    /// Cancelled: what had not been sent never will be.
    Cancelled,
    /// The import could not read the file at all (the reason is in the import report).
    Failed,
}

impl CampaignState {
    pub const ALL: [CampaignState; 6] = [
        CampaignState::Importing,
        CampaignState::Ready,
        CampaignState::Sending,
        CampaignState::Paused,
        CampaignState::Cancelled,
        CampaignState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Importing => "importing",
            CampaignState::Ready => "ready",
            CampaignState::Sending => "sending",
            CampaignState::Paused => "paused",
            CampaignState::Cancelled => "cancelled",
            CampaignState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Whether the campaign has been started and not cancelled (its messages are being made
    /// and its queue is served).
    pub fn is_started(self) -> bool {
        matches!(self, CampaignState::Sending | CampaignState::Paused)
    }
}

/// One row the import could not take, by its row number in the file (the header is row 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadRow {
    pub row: u64,
    pub error: String,
}

/// What reading the recipients found. `bad` lists at most `ImportReport::MAX_LISTED` rows;
/// `bad_rows` counts them all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Data rows read (the header not counted).
    pub rows: u64,
    pub bad_rows: u64,
    pub bad: Vec<BadRow>,
    /// Why the whole import failed, when it did.
    pub error: Option<String>,
    /// Recipients the template could not be rendered for when their messages were made
    /// (each also listed as a bad row): they get no message.
    #[serde(default)]
    pub unrendered: u64,
}

impl ImportReport {
    pub const MAX_LISTED: usize = 1000;

    /// Notes a bad row (listed while there is room, always counted).
    pub fn bad_row(&mut self, row: u64, error: impl Into<String>) {
        self.bad_rows += 1;
        if self.bad.len() < Self::MAX_LISTED {
            self.bad.push(BadRow {
                row,
                error: error.into(),
            });
        }
    }
}

/// A campaign. Addresses are kept formatted and already checked by the mail capability.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    pub id: CampaignId,
    pub name: String,
    /// The template's name; `template_version` is pinned when the campaign starts (or given).
    pub template: String,
    pub template_version: Option<u32>,
    /// The locale to render in (`None`: the server's default chain).
    pub locale: Option<String>,
    pub from: String,
    pub reply_to: Option<String>,
    pub tags: Vec<String>,
    /// Data every recipient's template sees, under their own.
    pub data: Value,
    /// At most this many messages per second (the campaign queue's rate).
    pub rate: Option<f64>,
    /// The relay (`mail.relays`) its messages go out through; `None`: the default one.
    pub relay: Option<String>,
    /// Messages are sent no earlier than this.
    pub send_at: Option<OffsetDateTime>,
    /// Start as soon as the import finishes.
    pub autostart: bool,
    pub state: CampaignState,
    /// The CSV or XLSX file the recipients came from.
    pub source: Option<FileId>,
    /// Recipients stored (kept by the store).
    pub recipients: u64,
    /// The row of the last recipient turned into a message (0: none yet); recipients are
    /// made into messages in row order (kept by the store).
    pub expanded: u64,
    pub import: ImportReport,
    pub actor: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
}

/// One recipient: its row (1-based position in the campaign: the file's row number when
/// imported, the list index + 1 when given inline), address and template data.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignRecipient {
    pub row: u64,
    /// The bare address (`a@b`, no display name) as given, already checked; unique in its
    /// campaign, compared case-insensitively.
    pub email: String,
    pub data: Value,
}

/// A campaign's messages counted by status, and how many of its recipients unsubscribed
/// through one of its messages' links.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CampaignCounts {
    pub by_status: Vec<(MessageStatus, u64)>,
    pub unsubscribed: u64,
}

impl CampaignCounts {
    pub fn status(&self, status: MessageStatus) -> u64 {
        self.by_status
            .iter()
            .filter(|(s, _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// Messages made so far.
    pub fn messages(&self) -> u64 {
        self.by_status.iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rows_are_all_counted_and_the_first_ones_listed() {
        let mut report = ImportReport::default();
        for row in 0..ImportReport::MAX_LISTED as u64 + 5 {
            report.bad_row(row + 2, "no email address");
        }
        assert_eq!(report.bad_rows, ImportReport::MAX_LISTED as u64 + 5);
        assert_eq!(report.bad.len(), ImportReport::MAX_LISTED);
        assert_eq!(
            report.bad.last().unwrap().row,
            ImportReport::MAX_LISTED as u64 + 1
        );
    }
}
