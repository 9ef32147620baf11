//! Rendering templates with MiniJinja, sandboxed: a fuel budget per render (which also bounds
//! what a template can allocate), strict undefined values (printing or looping over a missing
//! value is an error; testing it in `{% if %}` is not), HTML autoescaping in the HTML part only,
//! and a recursion limit. A template may `{% extends %}`, `{% include %}` or `{% import %}`
//! other templates by name, and name a `layout` whose same part receives the output as
//! `content`. Templates come from a `Library` the caller fills; a render that needs one it
//! does not hold answers `Missing` with the names, and the caller loads them and tries again
//! (the store is async, MiniJinja's loader is not).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use carafe_core::templates::{TemplateRef, TemplateVariant, TemplateVersion};
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};

/// The work one part's render may do (about 64 bytes of data per unit, too).
pub const FUEL: u64 = 250_000;
/// How deeply templates may nest (includes, macros, blocks).
const RECURSION_LIMIT: usize = 64;
/// How many layouts may wrap one another.
const MAX_LAYOUTS: usize = 4;

/// One of a template's three parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Subject,
    Text,
    Html,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Subject, Part::Text, Part::Html];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Text => "text",
            Part::Html => "html",
        }
    }

    fn source(self, v: &TemplateVariant) -> Option<&str> {
        match self {
            Part::Subject => Some(&v.subject),
            Part::Text => v.text.as_deref(),
            Part::Html => v.html.as_deref(),
        }
    }
}

/// Template versions by name: what a render may use.
#[derive(Debug, Default, Clone)]
pub struct Library {
    versions: HashMap<String, Arc<TemplateVersion>>,
}

impl Library {
    pub fn insert(&mut self, version: TemplateVersion) {
        self.versions
            .insert(version.name.clone(), Arc::new(version));
    }
}

/// What a render produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub template: TemplateRef,
}

/// Why a template cannot be rendered, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    pub part: Part,
    /// The template the problem is in (the one asked for, or one it uses).
    pub template: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RenderError {
    /// Templates the render needs that the library does not hold: load them and try again.
    Missing(BTreeSet<String>),
    /// The template has no variant for any locale of the chain.
    NoLocale {
        template: String,
        wanted: Vec<String>,
        has: Vec<String>,
    },
    Failed(TemplateError),
}

/// A new environment for `part`, sandboxed, without templates.
fn environment(part: Part) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_debug(true);
    let escape = if part == Part::Html {
        AutoEscape::Html
    } else {
        AutoEscape::None
    };
    env.set_auto_escape_callback(move |_| escape.clone());
    env
}

/// The 1-based column of byte `offset` in `source` (counted in characters).
fn column_of(source: &str, offset: usize) -> Option<u32> {
    let before = source.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Some(before[line_start..].chars().count() as u32 + 1)
}

fn describe(e: &minijinja::Error) -> String {
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if e.kind() == ErrorKind::OutOfFuel {
        message.push_str(" (the template does too much work: an endless or very long loop?)");
    }
    message
}

fn failure(
    e: &minijinja::Error,
    part: Part,
    fallback: &str,
    source: Option<&str>,
) -> TemplateError {
    let column = match (e.range(), source) {
        (Some(range), Some(src)) => column_of(src, range.start),
        _ => None,
    };
    TemplateError {
        part,
        template: e.name().unwrap_or(fallback).to_owned(),
        line: e.line().map(|l| l as u32),
        column,
        message: describe(e),
    }
}

/// Checks that `source` compiles as `part` of a template (a syntax check, nothing rendered).
pub fn check_source(part: Part, name: &str, source: &str) -> Result<(), TemplateError> {
    let mut env = environment(part);
    env.add_template_owned(name.to_owned(), source.to_owned())
        .map_err(|e| failure(&e, part, name, Some(source)))
}

/// A template compiled for one locale chain, ready to render for many contexts.
pub struct Prepared {
    envs: HashMap<Part, Environment<'static>>,
    sources: HashMap<(Part, String), String>,
    main: Arc<TemplateVersion>,
    locale: String,
    layouts: Vec<String>,
    missing: Arc<Mutex<BTreeSet<String>>>,
}

fn pick<'a>(version: &'a TemplateVersion, chain: &[String]) -> Option<&'a TemplateVariant> {
    chain.iter().find_map(|l| version.variant(l))
}

impl Prepared {
    /// Compiles template `name` of `library` and everything the library holds, each in the
    /// first locale of `chain` it has.
    pub fn new(library: &Library, name: &str, chain: &[String]) -> Result<Prepared, RenderError> {
        let lookup = |n: &str| {
            library
                .versions
                .get(n)
                .cloned()
                .ok_or_else(|| RenderError::Missing(BTreeSet::from([n.to_owned()])))
        };
        let main = lookup(name)?;
        let variant = pick(&main, chain).ok_or_else(|| RenderError::NoLocale {
            template: name.to_owned(),
            wanted: chain.to_vec(),
            has: main.variants.iter().map(|v| v.locale.clone()).collect(),
        })?;
        let locale = variant.locale.clone();
        // The layouts around it, innermost first.
        let mut layouts = Vec::new();
        let mut next = variant.layout.clone();
        while let Some(layout) = next {
            if layout == name || layouts.contains(&layout) || layouts.len() >= MAX_LAYOUTS {
                return Err(RenderError::Failed(TemplateError {
                    part: Part::Html,
                    template: layout,
                    line: None,
                    column: None,
                    message: format!("layouts nest in a loop or deeper than {MAX_LAYOUTS}"),
                }));
            }
            next = pick(&*lookup(&layout)?, chain).and_then(|v| v.layout.clone());
            layouts.push(layout);
        }
        let missing = Arc::new(Mutex::new(BTreeSet::new()));
        let mut envs = HashMap::new();
        let mut sources = HashMap::new();
        for part in Part::ALL {
            let mut env = environment(part);
            let mut lacking = BTreeSet::new();
            for (n, version) in &library.versions {
                match pick(version, chain).and_then(|v| part.source(v)) {
                    Some(source) => {
                        env.add_template_owned(n.clone(), source.to_owned())
                            .map_err(|e| RenderError::Failed(failure(&e, part, n, Some(source))))?;
                        sources.insert((part, n.clone()), source.to_owned());
                    }
                    None => {
                        lacking.insert(n.clone());
                    }
                }
            }
            let missing = missing.clone();
            env.set_loader(move |n: &str| {
                if lacking.contains(n) {
                    return Err(minijinja::Error::new(
                        ErrorKind::TemplateNotFound,
                        format!(
                            "template {n:?} has no {} part in this locale",
                            part.as_str()
                        ),
                    ));
                }
                missing.lock().expect("not poisoned").insert(n.to_owned());
                Ok(None::<String>)
            });
            envs.insert(part, env);
        }
        Ok(Prepared {
            envs,
            sources,
            main,
            locale,
            layouts,
            missing,
        })
    }

    pub fn reference(&self) -> TemplateRef {
        TemplateRef {
            name: self.main.name.clone(),
            version: self.main.version,
            locale: self.locale.clone(),
        }
    }

    fn run(&self, part: Part, name: &str, ctx: Value) -> Result<String, RenderError> {
        let env = &self.envs[&part];
        env.get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(|e| {
                let missing = self.missing.lock().expect("not poisoned");
                if !missing.is_empty() {
                    return RenderError::Missing(missing.clone());
                }
                let source = e
                    .name()
                    .and_then(|n| self.sources.get(&(part, n.to_owned())))
                    .map(String::as_str);
                RenderError::Failed(failure(&e, part, name, source))
            })
    }

    /// One part with its layouts around it; `None` when the template has no such part.
    fn part(&self, part: Part, data: &serde_json::Value) -> Result<Option<String>, RenderError> {
        let name = self.main.name.as_str();
        if !self.sources.contains_key(&(part, name.to_owned())) {
            return Ok(None);
        }
        let mut out = self.run(part, name, Value::from(Serde(data)))?;
        if part == Part::Subject {
            return Ok(Some(out.split_whitespace().collect::<Vec<_>>().join(" ")));
        }
        for layout in &self.layouts {
            if !self.sources.contains_key(&(part, layout.clone())) {
                continue;
            }
            let mut ctx: BTreeMap<String, Value> = data
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), Value::from(Serde(v))))
                .collect();
            let content = match part {
                Part::Html => Value::from_safe_string(out),
                _ => Value::from(out),
            };
            ctx.insert("content".into(), content);
            out = self.run(part, layout, Value::from(ctx))?;
        }
        Ok(Some(out))
    }

    /// Renders every part for `data` (a JSON object).
    pub fn render(&self, data: &serde_json::Value) -> Result<Rendered, RenderError> {
        Ok(Rendered {
            subject: self.part(Part::Subject, data)?.unwrap_or_default(),
            text: self.part(Part::Text, data)?,
            html: self.part(Part::Html, data)?,
            template: self.reference(),
        })
    }
}

#[cfg(test)]
mod tests;
