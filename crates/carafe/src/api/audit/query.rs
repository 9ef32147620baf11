//! What a caller asks of the audit log: the query string becomes an `AuditFilter` (every bad
//! value named in one 422), and the `Accept` header or `?format=` picks JSON pages or a CSV
//! export. Who may read which events is the audit capability's rule (`audit::authorize`).

use carafe_core::audit::{ActionMatch, AuditFilter};
use carafe_core::files::FileId;
use http::{HeaderMap, header};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::IntoParams;

use crate::api::error::{ApiError, ApiResult, FieldError};
use crate::api::pagination::ListParams;

/// Longest `actor` a filter accepts (`user:<id>` ids are the application's own).
const MAX_ACTOR_LEN: usize = 256;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only the events of this file (its id): uploads, scans, downloads, links, deletion.
    pub file: Option<String>,
    /// One action (`file.download`), or every action with a prefix: `file.*`.
    pub action: Option<String>,
    /// Only this actor: `key:<id>`, `user:<id>`, `cli` or `system`.
    pub actor: Option<String>,
    /// RFC 3339; events at or after this time (write `+` as `%2B`).
    pub since: Option<String>,
    /// RFC 3339; events before this time.
    pub until: Option<String>,
    /// `json` (the default) or `csv`; `csv` is the same as `Accept: text/csv`.
    pub format: Option<String>,
    /// JSON only: items per page, 1–500 (default 50). A CSV export ignores it.
    pub limit: Option<u32>,
    /// JSON only: the `next_cursor` of the previous page. A CSV export ignores it.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl AuditParams {
    pub fn list_params(&self) -> ListParams {
        ListParams {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }

    /// The filter these parameters describe; a 422 naming every bad one otherwise.
    pub fn filter(&self) -> ApiResult<AuditFilter> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: &str| {
            errors.push(FieldError::new(field, message));
        };
        let target = match self.file.as_deref().map(str::parse::<FileId>) {
            None => None,
            Some(Ok(id)) => Some(format!("file:{id}")),
            Some(Err(_)) => {
                bad("file", "not a file id");
                None
            }
        };
        let action = match self.action.as_deref().map(ActionMatch::parse) {
            None => None,
            Some(Ok(action)) => Some(action),
            Some(Err(message)) => {
                bad("action", message);
                None
            }
        };
        if let Some(actor) = &self.actor
            && (actor.is_empty()
                || actor.chars().count() > MAX_ACTOR_LEN
                || actor.chars().any(char::is_control))
        {
            bad("actor", "1–256 characters, no control characters");
        }
        let mut time = |field: &str, text: &Option<String>| match text {
            None => None,
            Some(t) => OffsetDateTime::parse(t, &Rfc3339).map_or_else(
                |_| {
                    bad(
                        field,
                        "an RFC 3339 time such as 2025-01-31T23:00:00Z (`+` as %2B)",
                    );
                    None
                },
                Some,
            ),
        };
        let since = time("since", &self.since);
        let until = time("until", &self.until);
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            bad("until", "must be later than `since`");
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(AuditFilter {
            target,
            action,
            actor: self.actor.clone(),
            since,
            until,
        })
    }

    /// CSV when `?format=csv`, or when no `format` is given and `Accept` prefers `text/csv`
    /// to `application/json`; JSON otherwise.
    pub fn format(&self, headers: &HeaderMap) -> ApiResult<Format> {
        match self.format.as_deref() {
            Some("json") => Ok(Format::Json),
            Some("csv") => Ok(Format::Csv),
            Some(_) => Err(ApiError::invalid("format", "`json` or `csv`")),
            None => Ok(accept_prefers_csv(headers)),
        }
    }
}

/// Reads `Accept` just far enough to choose: `text/csv` wins when its weight is above zero and
/// above that of an explicitly listed `application/json`; wildcards and absence mean JSON.
fn accept_prefers_csv(headers: &HeaderMap) -> Format {
    let (mut csv, mut json) = (0.0_f32, 0.0_f32);
    for value in headers.get_all(header::ACCEPT) {
        for range in value.to_str().unwrap_or_default().split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if media.eq_ignore_ascii_case("text/csv") {
                csv = csv.max(q);
            } else if media.eq_ignore_ascii_case("application/json") {
                json = json.max(q);
            }
        }
    }
    if csv > 0.0 && csv > json {
        Format::Csv
    } else {
        Format::Json
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accept(value: &'static str) -> Format {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(value));
        accept_prefers_csv(&headers)
    }

    #[test]
    fn accept_chooses_csv_only_when_preferred() {
        assert_eq!(accept_prefers_csv(&HeaderMap::new()), Format::Json);
        for csv in [
            "text/csv",
            "TEXT/CSV; charset=utf-8",
            "application/json;q=0.5, text/csv",
            "text/csv, */*",
        ] {
            assert_eq!(accept(csv), Format::Csv, "{csv}");
        }
        for json in [
            "*/*",
            "application/json",
            "application/json, text/csv",
            "text/csv;q=0",
            "text/*",
        ] {
            assert_eq!(accept(json), Format::Json, "{json}");
        }
    }

    #[test]
    fn every_bad_value_is_named() {
        let params = AuditParams {
            file: Some("nope".into()),
            action: Some("file.**".into()),
            actor: Some(String::new()),
            since: Some("2025-01-01 00:00:00+02:00".into()),
            until: Some("yesterday".into()),
            ..AuditParams::default()
        };
        let err = params.filter().unwrap_err();
        assert_eq!(err.status(), 422);
        let params = AuditParams {
            since: Some("2025-01-02T00:00:00Z".into()),
            until: Some("2025-01-01T00:00:00Z".into()),
            ..AuditParams::default()
        };
        assert_eq!(params.filter().unwrap_err().code(), "validation_failed");
    }
}
