//! Amazon SES bounce, complaint and delivery notifications, which arrive through SNS. An SNS
//! message is signed with RSA (SHA-1 for `SignatureVersion` 1, SHA-256 for 2) by the key of a
//! certificate SNS names by URL; Carafe fetches that certificate only from an SNS host over
//! https (`mail.webhooks.sns_cert_hosts`), keeps it for a day, and takes notifications only
//! from the topics configured (`mail.webhooks.ses_topics`) — any AWS account can get SNS to
//! sign a message of its own topic. A subscription to a configured topic is confirmed by
//! fetching its `SubscribeURL`, as SNS asks.
//!
//! Format: <https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html>
//! and <https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html>.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
};
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_cert::Certificate;
use x509_cert::der::DecodePem;

use super::settings::WebhookSettings;
use super::{Event, Parsed, Report, bare_message_id, invalid, recipient, refused, text};
use crate::mail::Error;

/// The largest certificate document fetched.
const MAX_CERT_BYTES: usize = 64 * 1024;

/// Fetches and keeps the certificates SNS signs with, and confirms subscriptions.
pub struct Certificates {
    client: reqwest::Client,
    /// Public keys (the certificates' subjectPublicKey bytes) by certificate URL.
    keys: moka::future::Cache<String, Arc<Vec<u8>>>,
}

impl Default for Certificates {
    fn default() -> Self {
        let client = reqwest::Client::builder()
            .user_agent(concat!("carafe/", env!("CARGO_PKG_VERSION")))
            // Only the URL whose host was checked is fetched.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let keys = moka::future::Cache::builder()
            .max_capacity(64)
            .time_to_live(Duration::from_secs(24 * 3600))
            .build();
        Certificates { client, keys }
    }
}

/// An SNS message as posted (`Notification`, `SubscriptionConfirmation`,
/// `UnsubscribeConfirmation`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope {
    #[serde(rename = "Type")]
    kind: String,
    message_id: String,
    topic_arn: String,
    message: String,
    timestamp: String,
    signature_version: String,
    signature: String,
    #[serde(rename = "SigningCertURL")]
    signing_cert_url: String,
    subject: Option<String>,
    token: Option<String>,
    #[serde(rename = "SubscribeURL")]
    subscribe_url: Option<String>,
}

impl Envelope {
    /// The string SNS signs: the fields its type names, in order, each as `Name\nvalue\n`.
    fn canonical(&self) -> Result<String, Error> {
        let mut fields: Vec<(&str, &str)> = vec![("Message", &self.message)];
        fields.push(("MessageId", &self.message_id));
        match self.kind.as_str() {
            "Notification" => {
                if let Some(subject) = &self.subject {
                    fields.push(("Subject", subject));
                }
                fields.push(("Timestamp", &self.timestamp));
            }
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
                let url = self.subscribe_url.as_deref();
                let url = url.ok_or_else(|| invalid("/SubscribeURL", "missing"))?;
                let token = self.token.as_deref();
                fields.push(("SubscribeURL", url));
                fields.push(("Timestamp", &self.timestamp));
                fields.push(("Token", token.ok_or_else(|| invalid("/Token", "missing"))?));
            }
            other => {
                return Err(invalid(
                    "/Type",
                    format!("{other:?} is not an SNS message type"),
                ));
            }
        }
        fields.push(("TopicArn", &self.topic_arn));
        fields.push(("Type", &self.kind));
        Ok(fields
            .into_iter()
            .map(|(k, v)| format!("{k}\n{v}\n"))
            .collect())
    }
}

/// Whether `url` may be fetched for SNS: https on an allowed host (`*` = one DNS label), or
/// plain http to a loopback address named in the list (a local stand-in for SNS).
pub(super) fn allowed(url: &str, hosts: &[String]) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    if !scheme_ok || !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    let host = host.to_ascii_lowercase();
    hosts.iter().any(|pattern| {
        let (p, h): (Vec<&str>, Vec<&str>) =
            (pattern.split('.').collect(), host.split('.').collect());
        p.len() == h.len()
            && p.iter().zip(&h).all(|(p, h)| {
                (*p == "*"
                    && !h.is_empty()
                    && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                    || p.eq_ignore_ascii_case(h)
            })
    })
}

impl Certificates {
    /// Checks an SNS message and reads its SES reports (or confirms a subscription).
    pub async fn take(&self, settings: &WebhookSettings, body: &[u8]) -> Result<Parsed, Error> {
        if settings.ses_topics.is_empty() {
            return Err(refused(
                "webhook_not_configured",
                "SES notifications are not taken: set mail.webhooks.ses_topics",
            ));
        }
        let envelope: Envelope = serde_json::from_slice(body)
            .map_err(|e| invalid("", format!("not an SNS message: {e}")))?;
        if !settings.ses_topics.contains(&envelope.topic_arn) {
            return Err(refused(
                "webhook_topic",
                "the SNS topic is not one of mail.webhooks.ses_topics",
            ));
        }
        self.verify(&envelope, &settings.sns_cert_hosts).await?;
        match envelope.kind.as_str() {
            "SubscriptionConfirmation" => {
                let url = envelope.subscribe_url.as_deref().unwrap_or_default();
                self.confirm(url, &settings.sns_cert_hosts).await?;
                tracing::info!(topic = %envelope.topic_arn, "SNS subscription confirmed");
                Ok(Parsed {
                    subscription_confirmed: true,
                    ..Parsed::default()
                })
            }
            "UnsubscribeConfirmation" => Ok(Parsed::default()),
            _ => ses_reports(&envelope),
        }
    }

    async fn verify(&self, envelope: &Envelope, hosts: &[String]) -> Result<(), Error> {
        let algorithm = match envelope.signature_version.as_str() {
            "1" => &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "2" => &RSA_PKCS1_2048_8192_SHA256,
            v => {
                return Err(refused(
                    "webhook_signature",
                    format!("SNS SignatureVersion {v:?} is not 1 or 2"),
                ));
            }
        };
        let url = &envelope.signing_cert_url;
        if !allowed(url, hosts) || !url.ends_with(".pem") {
            return Err(refused(
                "webhook_signature",
                "the signing certificate is not on an SNS host (mail.webhooks.sns_cert_hosts)",
            ));
        }
        let signature = STANDARD
            .decode(envelope.signature.trim())
            .map_err(|_| refused("webhook_signature", "the signature is not base64"))?;
        let key = self.key(url).await?;
        let canonical = envelope.canonical()?;
        UnparsedPublicKey::new(algorithm, key.as_slice())
            .verify(canonical.as_bytes(), &signature)
            .map_err(|_| refused("webhook_signature", "the SNS signature does not match"))
    }

    async fn key(&self, url: &str) -> Result<Arc<Vec<u8>>, Error> {
        if let Some(key) = self.keys.get(url).await {
            return Ok(key);
        }
        let pem = self.fetch(url).await?;
        let cert = Certificate::from_pem(&pem).map_err(|_| {
            refused(
                "webhook_signature",
                "the signing certificate cannot be read",
            )
        })?;
        let spki = &cert.tbs_certificate.subject_public_key_info;
        let key = Arc::new(spki.subject_public_key.raw_bytes().to_vec());
        self.keys.insert(url.to_owned(), key.clone()).await;
        Ok(key)
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, Error> {
        let unavailable = |e: String| Error::Unavailable {
            code: "webhook_certificate_unavailable",
            message: format!("the SNS signing certificate could not be fetched: {e}"),
        };
        let mut res = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(e.without_url().to_string()))?;
        if !res.status().is_success() {
            return Err(unavailable(format!("HTTP {}", res.status().as_u16())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| unavailable(e.without_url().to_string()))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_CERT_BYTES {
                return Err(unavailable("larger than 64 KiB".into()));
            }
        }
        Ok(body)
    }

    async fn confirm(&self, url: &str, hosts: &[String]) -> Result<(), Error> {
        if !allowed(url, hosts) {
            return Err(refused(
                "webhook_signature",
                "the SubscribeURL is not on an SNS host (mail.webhooks.sns_cert_hosts)",
            ));
        }
        let res = self.client.get(url).send().await;
        match res {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
            Err(e) => Err(e.without_url().to_string()),
        }
        .map_err(|e| Error::Unavailable {
            code: "webhook_confirmation_failed",
            message: format!("the SNS subscription could not be confirmed: {e}"),
        })
    }
}

/// An SES notification (`notificationType`, or `eventType` from a configuration set).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    notification_type: Option<String>,
    event_type: Option<String>,
    mail: Mail,
    bounce: Option<Value>,
    complaint: Option<Value>,
    delivery: Option<Value>,
    delivery_delay: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mail {
    message_id: String,
    #[serde(default)]
    headers: Vec<Header>,
    common_headers: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Header {
    name: String,
    value: String,
}

fn timestamp(v: &Value) -> OffsetDateTime {
    v.get("timestamp")
        .and_then(Value::as_str)
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .unwrap_or_else(carafe_core::time::now)
}

fn ses_reports(envelope: &Envelope) -> Result<Parsed, Error> {
    let n: Notification = serde_json::from_str(&envelope.message)
        .map_err(|e| invalid("/Message", format!("not an SES notification: {e}")))?;
    let kind = n.notification_type.as_deref().or(n.event_type.as_deref());
    // The copy's own Message-ID, from the original headers when SES includes them.
    let message_id = n
        .mail
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("message-id"))
        .map(|h| h.value.clone())
        .or_else(|| {
            n.mail
                .common_headers
                .as_ref()
                .and_then(|c| text(c, "messageId"))
        })
        .and_then(|id| bare_message_id(&id));
    let report = |event, address: &str, at, reason| Report {
        event,
        recipient: recipient(address),
        relay_id: Some(n.mail.message_id.clone()),
        message_id: message_id.clone(),
        message: None,
        event_id: envelope.message_id.clone(),
        at,
        reason,
    };
    let mut parsed = Parsed::default();
    // Each kind lists its recipients under its own key, as objects or as bare addresses.
    let (detail, list, event) = match (kind, &n.bounce, &n.complaint, &n.delivery) {
        (Some("Bounce"), Some(b), _, _) => {
            let permanent = b.get("bounceType").and_then(Value::as_str) == Some("Permanent");
            let event = if permanent {
                Event::Bounced
            } else {
                Event::SoftBounced
            };
            (b, "bouncedRecipients", event)
        }
        (Some("Complaint"), _, Some(c), _) => (c, "complainedRecipients", Event::Complained),
        (Some("Delivery"), _, _, Some(d)) => (d, "recipients", Event::Delivered),
        (Some("DeliveryDelay"), ..) if n.delivery_delay.is_some() => {
            let d = n.delivery_delay.as_ref().expect("checked");
            (d, "delayedRecipients", Event::Delayed)
        }
        _ => {
            parsed.ignored = 1;
            return Ok(parsed);
        }
    };
    let at = timestamp(detail);
    let general = match event {
        Event::Bounced | Event::SoftBounced => {
            let t = text(detail, "bounceType").unwrap_or_default();
            let s = text(detail, "bounceSubType").unwrap_or_default();
            Some(format!("{t}/{s}"))
        }
        Event::Complained => text(detail, "complaintFeedbackType"),
        Event::Delivered => text(detail, "smtpResponse"),
        _ => text(detail, "delayType"),
    };
    for r in detail
        .get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (address, reason) = match r {
            Value::String(a) => (a.as_str(), general.clone()),
            r => match r.get("emailAddress").and_then(Value::as_str) {
                Some(a) => (a, text(r, "diagnosticCode").or_else(|| general.clone())),
                None => continue,
            },
        };
        parsed.reports.push(report(event, address, at, reason));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_come_only_from_sns_hosts() {
        let hosts = WebhookSettings::default().sns_cert_hosts;
        for ok in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://SNS.eu-west-2.amazonaws.com/x.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/x.pem",
        ] {
            assert!(allowed(ok, &hosts), "{ok}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.a.b.amazonaws.com/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "https://s3.amazonaws.com/x.pem",
            "https://127.0.0.1/x.pem",
            "not a url",
        ] {
            assert!(!allowed(bad, &hosts), "{bad}");
        }
        // A loopback stand-in may be plain http, when it is listed.
        let local = vec!["127.0.0.1".to_string()];
        assert!(allowed("http://127.0.0.1:9000/c.pem", &local));
        assert!(!allowed(
            "http://localhost:9000/c.pem",
            &["localhost".into()]
        ));
    }
}
