//! Who may read a file's bytes, which bytes, and the record of each download. A reader holds a
//! signed link, or credentials (an API key with `files`, or the owner's token), or nothing —
//! enough for a public bucket only. The file is looked up before any credentials are checked,
//! so an unknown id is not found whoever asks. Only ready files are served, and every
//! download that delivers bytes (or a redirect to them) is audited, in batches.

use std::future::Future;
use std::sync::Arc;

use axum::response::Response;
use carafe_core::StoreError;
use carafe_core::files::{BucketPolicy, FileId, FileRecord, FileStatus, Visibility};
use carafe_core::keys::Scope;
use http::request::Parts;
use http::{Method, StatusCode, header};
use serde::Serialize;

use super::disposition::DispositionKind;
use super::download::{Content, Delivery, ServeError, Served, header_value};
use super::links::{LinkError, LinkQuery};
use crate::context::{Actor, Denied, Origin, Principal};
use crate::files::store::master_keys::KeyError;
use crate::files::{Files, thumb_key};

/// How a download's reader asks.
#[derive(Debug)]
pub enum Reader {
    /// With a signed link's query.
    Link(LinkQuery),
    /// With credentials that `Authenticate` checks, once the file is found.
    Credentials,
    /// With nothing: only public buckets' files.
    Anonymous,
}

/// Checks the credentials a request carries (the web layer knows how).
pub trait Authenticate {
    /// Why the credentials are not accepted.
    type Error;

    fn principal(
        &self,
        request: &mut Parts,
    ) -> impl Future<Output = Result<Principal, Self::Error>> + Send;
}

/// One download request.
#[derive(Debug)]
pub struct Download {
    pub id: FileId,
    /// One of the file's thumbnails instead of the file.
    pub thumbnail: Option<String>,
    pub reader: Reader,
    /// Always saved, never shown (`?download=1`).
    pub attachment: bool,
    /// The request's id, and the client's address and agent, for the audit log.
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Why a download is refused. `E` is why credentials were not accepted.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError<E> {
    #[error("no such file")]
    NotFound,
    #[error("the link has expired")]
    LinkExpired,
    #[error("the link is not valid for this file")]
    LinkInvalid,
    /// No link, no credentials, and the bucket is not public.
    #[error("the file needs an API key, a token or a signed link")]
    Unauthenticated,
    #[error("the credentials are not accepted")]
    Credentials(E),
    #[error(transparent)]
    Denied(Denied),
    #[error("the file is not ready to be served")]
    NotReady(FileStatus),
    /// The file is encrypted under a master key this server does not have.
    #[error("the file's master key is not configured")]
    KeyMissing,
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who reads, and how they are let in.
struct Access {
    actor: String,
    via: &'static str,
    delivery: Delivery,
}

/// What a download's audit event says besides its origin.
#[derive(Serialize)]
struct Downloaded<'a> {
    via: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    thumbnail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    range: Option<&'a str>,
    status: u16,
}

impl Files {
    /// Answers a GET or HEAD of a file's content (or a thumbnail) for `request`, whose
    /// credentials `auth` checks when the reader presents them.
    pub async fn download<A: Authenticate>(
        &self,
        mut request: Parts,
        download: Download,
        auth: &A,
    ) -> Result<Response, DownloadError<A::Error>> {
        let id = download.id;
        let Some(servable) = self.servable(id).await? else {
            return Err(DownloadError::NotFound);
        };
        let file = &servable.file;
        // The bucket is read once (from its cache) for visibility, caching and redirects.
        let bucket = self.bucket(&file.bucket).await?;
        let default_policy;
        let policy = match &bucket {
            Some(b) => &b.policy,
            None => {
                default_policy = BucketPolicy::default();
                &default_policy
            }
        };
        let forced = download.attachment.then_some(DispositionKind::Attachment);
        let access = self
            .authorize(&mut request, &download.reader, file, policy, forced, auth)
            .await?;
        if file.status != FileStatus::Ready {
            return Err(DownloadError::NotReady(file.status));
        }
        let dek = self.data_key(file).map_err(|e| key_missing(id, &e))?;
        let thumbnail = download.thumbnail.as_deref();
        let content = match thumbnail {
            None => servable.content.clone(),
            Some(name) => thumbnail_content(file, name).ok_or(DownloadError::NotFound)?,
        };
        let served = Served {
            content,
            cache_control: header_value(policy.cache_control()),
            dek,
        };
        let (method, headers) = (&request.method, &request.headers);
        // A presigned URL is signed for GET: HEAD (and anything shown inline) is answered here.
        let redirected = match policy.presigned_downloads && method == Method::GET {
            true => self.redirect(&served, &access.delivery).await?,
            false => None,
        };
        let response = match redirected {
            Some(r) => r,
            None => {
                self.serve(method, headers, &served, &access.delivery)
                    .await?
            }
        };
        let delivered = response.status().is_success() || response.status() == StatusCode::FOUND;
        if method == Method::GET && delivered {
            // Header values that pass `to_str` are visible ASCII: any byte is a char boundary.
            let range = headers
                .get(header::RANGE)
                .and_then(|r| r.to_str().ok())
                .map(|r| &r[..r.len().min(100)]);
            let origin = Origin {
                actor: Actor {
                    id: access.actor,
                    request_id: download.request_id,
                },
                ip: download.ip,
                user_agent: download.user_agent,
            };
            let event = origin.into_event_with(
                "file.download",
                servable.audit_target.clone(),
                &Downloaded {
                    via: access.via,
                    thumbnail,
                    range,
                    status: response.status().as_u16(),
                },
            );
            self.audit.record(event).await;
        }
        Ok(response)
    }

    /// Decides whether `reader` may read `file`.
    async fn authorize<A: Authenticate>(
        &self,
        request: &mut Parts,
        reader: &Reader,
        file: &FileRecord,
        policy: &BucketPolicy,
        forced: Option<DispositionKind>,
        auth: &A,
    ) -> Result<Access, DownloadError<A::Error>> {
        let mut delivery = Delivery {
            disposition: forced,
            filename: None,
        };
        match reader {
            Reader::Link(link) => {
                let now = carafe_core::time::now().unix_timestamp();
                let grant = self.links.verify(file.id, link, now).map_err(|e| match e {
                    LinkError::Expired => DownloadError::LinkExpired,
                    LinkError::Invalid => DownloadError::LinkInvalid,
                })?;
                delivery.disposition = delivery.disposition.or(Some(grant.disposition));
                delivery.filename = grant.filename;
                Ok(Access {
                    actor: "link".into(),
                    via: "link",
                    delivery,
                })
            }
            Reader::Credentials => {
                let principal = auth
                    .principal(request)
                    .await
                    .map_err(DownloadError::Credentials)?;
                principal
                    .require(Scope::Files)
                    .map_err(DownloadError::Denied)?;
                if !principal.may_see(Scope::Files, file.owner.as_deref()) {
                    return Err(DownloadError::NotFound);
                }
                let via = match principal {
                    Principal::Key(_) => "key",
                    Principal::User(_) => "token",
                };
                Ok(Access {
                    actor: principal.actor_id(),
                    via,
                    delivery,
                })
            }
            Reader::Anonymous if policy.visibility == Visibility::Public => Ok(Access {
                actor: "anonymous".into(),
                via: "public",
                delivery,
            }),
            Reader::Anonymous => Err(DownloadError::Unauthenticated),
        }
    }
}

/// The thumbnail `name` of `file` as content to serve, named after the file.
fn thumbnail_content(file: &FileRecord, name: &str) -> Option<Arc<Content>> {
    let t = file.thumbnails.iter().find(|t| t.name == name)?;
    let stem = file
        .name
        .rsplit_once('.')
        .map_or(file.name.as_str(), |(s, _)| s);
    let ext = if t.kind == "png" { "png" } else { "jpg" };
    Some(Arc::new(Content::new(
        thumb_key(file.id, name),
        t.size,
        &t.sha256,
        t.kind.clone(),
        format!("image/{}", t.kind),
        format!("{stem}_{name}.{ext}"),
        file.updated_at.into(),
    )))
}

/// An encrypted file whose master key this server does not have: a configuration problem,
/// answered as unavailable (never with undecrypted bytes).
fn key_missing<E>(id: FileId, e: &KeyError) -> DownloadError<E> {
    tracing::error!(file = %id, error = %e, "cannot unwrap an encrypted file's data key");
    DownloadError::KeyMissing
}
