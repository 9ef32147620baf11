//! Mail templates: numbered, immutable versions of a subject, text and HTML, one variant per
//! locale, rendered with MiniJinja in a sandbox (`render`). Putting a variant checks every
//! part compiles and creates the next version; sending or previewing renders a version (the
//! latest unless one is named) in the first locale of the fallback chain it has (`locale`),
//! loading the layouts and partials it uses by name. A message records the version it was
//! rendered from.

pub mod locale;
pub mod render;

use carafe_core::page::{Page, PageRequest};
use carafe_core::templates::{TemplateVariant, TemplateVersion, is_template_name};
use carafe_core::time::now;

use self::render::{Library, Part, Prepared, RenderError, Rendered, TemplateError, check_source};
use super::{Error, Mailer};
use crate::context::{Actor, FieldError};

/// The longest subject source, and the longest text or HTML source.
pub const MAX_SUBJECT_SOURCE: usize = 4 * 1024;
pub const MAX_BODY_SOURCE: usize = 512 * 1024;
/// Most templates one render may load (itself, its layouts and partials).
const MAX_LOADED: usize = 32;

/// A new variant of a template, as a client puts it.
#[derive(Debug, Clone, Default)]
pub struct TemplatePut {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub locale: Option<String>,
    pub layout: Option<String>,
}

/// Which template to render, and with what.
#[derive(Debug, Clone)]
pub struct TemplateUse {
    pub name: String,
    pub version: Option<u32>,
    pub locale: Option<String>,
    /// A JSON object: the template's variables.
    pub data: serde_json::Value,
}

/// A template problem as a refused field: `field`, with where in the source it is.
fn refusal(field: &str, e: &TemplateError, show_part: bool) -> FieldError {
    let mut message = e.message.clone();
    if show_part {
        message = format!("{} ({} part of {:?})", message, e.part.as_str(), e.template);
    }
    FieldError::new(field, message).at(e.line, e.column)
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Invalid(vec![FieldError::new(field, message)])
}

impl Mailer {
    /// Checks `put` and stores it as the next version of template `name`.
    pub async fn put_template(
        &self,
        name: &str,
        put: TemplatePut,
        actor: &Actor,
    ) -> Result<TemplateVersion, Error> {
        if !is_template_name(name) {
            return Err(invalid(
                "name",
                "1-64 of a-z 0-9 . _ -, starting with a letter or digit",
            ));
        }
        let mut errors = Vec::new();
        let locale = match put.locale.as_deref() {
            None => Some(self.settings().default_locale.clone()),
            Some(l) => locale::canonical(l),
        };
        if locale.is_none() {
            errors.push(FieldError::new(
                "/locale",
                "a language tag such as en or ko-KR",
            ));
        }
        if put.subject.trim().is_empty() || put.subject.len() > MAX_SUBJECT_SOURCE {
            errors.push(FieldError::new(
                "/subject",
                format!("give a subject of at most {MAX_SUBJECT_SOURCE} bytes"),
            ));
        }
        if put.text.is_none() && put.html.is_none() {
            errors.push(FieldError::new("/text", "give text, html or both"));
        }
        for (field, body) in [("/text", &put.text), ("/html", &put.html)] {
            if body.as_ref().is_some_and(|b| b.len() > MAX_BODY_SOURCE) {
                errors.push(FieldError::new(
                    field,
                    format!("at most {MAX_BODY_SOURCE} bytes"),
                ));
            }
        }
        if let Some(layout) = &put.layout {
            if !is_template_name(layout) || layout == name {
                errors.push(FieldError::new("/layout", "the name of another template"));
            } else if self.store().get_template(layout, None).await?.is_none() {
                errors.push(FieldError::new(
                    "/layout",
                    format!("no template named {layout:?}: put the layout first"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        let parts = [
            (Part::Subject, Some(&put.subject)),
            (Part::Text, put.text.as_ref()),
            (Part::Html, put.html.as_ref()),
        ];
        for (part, source) in parts {
            if let Some(source) = source
                && let Err(e) = check_source(part, name, source)
            {
                errors.push(refusal(&format!("/{}", part.as_str()), &e, false));
            }
        }
        if !errors.is_empty() {
            return Err(Error::Template(errors));
        }
        let variant = TemplateVariant {
            locale: locale.expect("checked"),
            subject: put.subject,
            text: put.text,
            html: put.html,
            layout: put.layout,
        };
        Ok(self
            .store()
            .put_template(name, variant, &actor.id, now())
            .await?)
    }

    /// A version of a template (the latest when `version` is `None`).
    pub async fn template(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<TemplateVersion, Error> {
        self.store()
            .get_template(name, version)
            .await?
            .ok_or(Error::NotFound)
    }

    /// A template's versions, newest first.
    pub async fn template_versions(
        &self,
        name: &str,
        page: &PageRequest,
    ) -> Result<Page<TemplateVersion>, Error> {
        let found = self.store().template_versions(name, page).await?;
        if found.items.is_empty() && page.after.is_none() {
            return Err(Error::NotFound);
        }
        Ok(found)
    }

    /// Every template at its latest version, in name order.
    pub async fn templates(&self, page: &PageRequest) -> Result<Page<TemplateVersion>, Error> {
        Ok(self.store().list_templates(page).await?)
    }

    pub async fn delete_template(&self, name: &str) -> Result<(), Error> {
        match self.store().delete_template(name).await? {
            true => Ok(()),
            false => Err(Error::NotFound),
        }
    }

    /// Renders `what`; refusals name fields under `field` (`/template` in a send request).
    pub async fn render(&self, what: &TemplateUse, field: &str) -> Result<Rendered, Error> {
        let whole = if field.is_empty() { "/" } else { field };
        if !what.data.is_object() {
            return Err(invalid(&format!("{field}/data"), "a JSON object"));
        }
        let mut out = self
            .render_batch(what, vec![what.data.clone()], field)
            .await?;
        match out.pop() {
            Some(Ok(rendered)) => Ok(rendered),
            Some(Err(e)) => Err(Error::Template(vec![refusal(whole, &e, true)])),
            None => Err(invalid(whole, "nothing was rendered")),
        }
    }

    /// Renders the template `what` names (its `data` is not used) once for each of `data`, in
    /// one blocking task: a campaign's batch of recipients. A problem of the template itself
    /// (missing, no such version or locale, one it uses missing) refuses the whole batch; a
    /// render that fails for one recipient's data (an undefined value, fuel) is that item's
    /// error.
    pub async fn render_batch(
        &self,
        what: &TemplateUse,
        data: Vec<serde_json::Value>,
        field: &str,
    ) -> Result<Vec<Result<Rendered, TemplateError>>, Error> {
        let whole = if field.is_empty() { "/" } else { field };
        let wanted = match what.locale.as_deref() {
            None => None,
            Some(l) => Some(locale::canonical(l).ok_or_else(|| {
                invalid(
                    &format!("{field}/locale"),
                    "a language tag such as en or ko-KR",
                )
            })?),
        };
        let chain = locale::chain(wanted.as_deref(), &self.settings().default_locale);
        let main = match self.store().get_template(&what.name, what.version).await? {
            Some(main) => main,
            None if what.version.is_some() => {
                return Err(invalid(
                    &format!("{field}/version"),
                    "no such version of the template",
                ));
            }
            None => {
                return Err(invalid(
                    &format!("{field}/name"),
                    "no template of that name",
                ));
            }
        };
        let mut library = Library::default();
        library.insert(main);
        let data = std::sync::Arc::new(data);
        for _ in 0..MAX_LOADED {
            let (lib, name, chain2, data) = (
                library.clone(),
                what.name.clone(),
                chain.clone(),
                data.clone(),
            );
            let outcome = tokio::task::spawn_blocking(move || {
                let prepared = Prepared::new(&lib, &name, &chain2)?;
                let mut out = Vec::with_capacity(data.len());
                for d in data.iter() {
                    out.push(match prepared.render(d) {
                        Ok(r) => Ok(r),
                        Err(RenderError::Failed(e)) => Err(e),
                        Err(other) => return Err(other),
                    });
                }
                Ok(out)
            })
            .await
            .map_err(|e| Error::Store(carafe_core::StoreError::other(e)))?;
            match outcome {
                Ok(rendered) => return Ok(rendered),
                Err(RenderError::Missing(names)) => {
                    for n in names {
                        match self.store().get_template(&n, None).await? {
                            Some(v) => library.insert(v),
                            None => {
                                return Err(Error::Template(vec![FieldError::new(
                                    whole,
                                    format!(
                                        "template {:?} uses {n:?}, which does not exist",
                                        what.name
                                    ),
                                )]));
                            }
                        }
                    }
                }
                Err(RenderError::NoLocale {
                    template,
                    wanted,
                    has,
                }) => {
                    return Err(invalid(
                        &format!("{field}/locale"),
                        format!(
                            "template {template:?} has no variant for {} (it has {})",
                            wanted.join(", "),
                            has.join(", ")
                        ),
                    ));
                }
                Err(RenderError::Failed(e)) => {
                    return Err(Error::Template(vec![refusal(whole, &e, true)]));
                }
            }
        }
        Err(Error::Template(vec![FieldError::new(
            whole,
            format!("the template uses more than {MAX_LOADED} others"),
        )]))
    }
}
