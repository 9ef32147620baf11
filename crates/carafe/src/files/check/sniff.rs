//! Content sniffing for uploads: decides what a file is from its first bytes and checks that
//! against the extension of its name, so that a renamed executable, an HTML page named `.png`
//! or a GIF/script polyglot is caught before the file is stored or served.
//!
//! Binary formats are matched with the `infer` crate (pure Rust, embedded signatures, works on
//! a head buffer; `file-format` needs its optional readers and a seekable whole file to tell
//! OOXML documents apart, `infer` finds them in the head). Markup (HTML/SVG/XML) follows the
//! WHATWG MIME Sniffing patterns, and plain text is valid UTF-8 without control characters.
//! Everything here looks at most at the first [`HEAD_LEN`] bytes.

use std::fmt;

/// How many leading bytes the sniffers look at; callers pass at least this much when the file
/// is that long.
pub const HEAD_LEN: usize = 8 * 1024;

/// How many leading bytes of a binary file are searched for script markers.
const POLYGLOT_LEN: usize = 1024;

/// The file types Carafe tells apart. Names are stable and lowercase (stored in the database
/// and used in bucket allow-lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Png,
    Jpeg,
    Gif,
    Webp,
    Bmp,
    Tiff,
    Heic,
    Avif,
    Svg,
    Pdf,
    Zip,
    Gzip,
    Docx,
    Xlsx,
    Pptx,
    Mp4,
    Mov,
    Webm,
    Mp3,
    Wav,
    Csv,
    Txt,
    Json,
    Html,
    Xml,
    /// A native executable: PE (Windows), ELF or Mach-O.
    Exe,
    Unknown,
}

const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
const PPTX: &str = "application/vnd.openxmlformats-officedocument.presentationml.presentation";

/// Name, MIME type and accepted extensions of every kind, `Unknown` last.
const TABLE: [(Kind, &str, &str, &[&str]); 27] = [
    (Kind::Png, "png", "image/png", &["png"]),
    (
        Kind::Jpeg,
        "jpeg",
        "image/jpeg",
        &["jpg", "jpeg", "jfif", "jpe"],
    ),
    (Kind::Gif, "gif", "image/gif", &["gif"]),
    (Kind::Webp, "webp", "image/webp", &["webp"]),
    (Kind::Bmp, "bmp", "image/bmp", &["bmp", "dib"]),
    (Kind::Tiff, "tiff", "image/tiff", &["tif", "tiff"]),
    (Kind::Heic, "heic", "image/heic", &["heic", "heif"]),
    (Kind::Avif, "avif", "image/avif", &["avif"]),
    (Kind::Svg, "svg", "image/svg+xml", &["svg"]),
    (Kind::Pdf, "pdf", "application/pdf", &["pdf"]),
    (Kind::Zip, "zip", "application/zip", &["zip"]),
    (Kind::Gzip, "gzip", "application/gzip", &["gz", "tgz"]),
    (Kind::Docx, "docx", DOCX, &["docx"]),
    (Kind::Xlsx, "xlsx", XLSX, &["xlsx"]),
    (Kind::Pptx, "pptx", PPTX, &["pptx"]),
    (Kind::Mp4, "mp4", "video/mp4", &["mp4", "m4v", "m4a"]),
    (Kind::Mov, "mov", "video/quicktime", &["mov", "qt"]),
    (Kind::Webm, "webm", "video/webm", &["webm"]),
    (Kind::Mp3, "mp3", "audio/mpeg", &["mp3"]),
    (Kind::Wav, "wav", "audio/wav", &["wav"]),
    (Kind::Csv, "csv", "text/csv; charset=utf-8", &["csv"]),
    (
        Kind::Txt,
        "txt",
        "text/plain; charset=utf-8",
        &["txt", "text", "log", "md"],
    ),
    (Kind::Json, "json", "application/json", &["json"]),
    (
        Kind::Html,
        "html",
        "text/html; charset=utf-8",
        &["html", "htm", "xhtml"],
    ),
    (Kind::Xml, "xml", "application/xml", &["xml"]),
    (
        Kind::Exe,
        "exe",
        "application/octet-stream",
        &["exe", "dll", "so", "dylib", "bin"],
    ),
    (Kind::Unknown, "unknown", "application/octet-stream", &[]),
];

impl Kind {
    /// Every kind, `Unknown` last.
    pub fn all() -> impl Iterator<Item = Kind> {
        TABLE.iter().map(|row| row.0)
    }

    /// The stable lowercase name.
    pub fn name(self) -> &'static str {
        self.info().0
    }

    /// The kind with this stable name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::all().find(|kind| kind.name().eq_ignore_ascii_case(name))
    }

    /// The MIME type to serve the content as.
    pub fn mime(self) -> &'static str {
        self.info().1
    }

    /// The lowercase extensions a file of this kind may carry; the first one is the one to use
    /// for a name that has none.
    pub fn extensions(self) -> &'static [&'static str] {
        self.info().2
    }

    /// Markup that a browser runs scripts in when it renders it inline (HTML, SVG, XML):
    /// serve these only as attachments or from a sandboxed origin.
    pub fn is_active(self) -> bool {
        matches!(self, Kind::Html | Kind::Svg | Kind::Xml)
    }

    /// Plain-text kinds, told apart by the extension alone.
    pub fn is_text(self) -> bool {
        matches!(self, Kind::Txt | Kind::Csv | Kind::Json)
    }

    fn info(self) -> (&'static str, &'static str, &'static [&'static str]) {
        let row = TABLE.iter().find(|row| row.0 == self).unwrap_or(&TABLE[26]);
        (row.1, row.2, row.3)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a file's content and name do not go together. `code()` gives the stable machine code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// `type_unknown`: the content matched no kind Carafe knows. Callers that accept arbitrary
    /// binaries may still store it as `application/octet-stream`, served as an attachment.
    #[error("the file type is not recognised")]
    TypeUnknown,
    /// `extension_mismatch`: the extension belongs to another kind than the content (a PNG
    /// named `.pdf`, HTML named `.png`, a PE named `.pdf`). A missing extension is not a
    /// mismatch: the kind's first extension is used for such a name.
    #[error("the content is {kind} but the name ends in .{ext}")]
    ExtensionMismatch { kind: Kind, ext: String },
    /// `dangerous_content`: a text file (txt/csv/json) holding HTML/script markup in its first
    /// 8 KiB, or a binary file holding `<script`/`<html` in its first 1 KiB: a polyglot that
    /// a browser may sniff and run as HTML.
    #[error("the {kind} content carries the markup marker {marker}")]
    DangerousContent { kind: Kind, marker: &'static str },
}

impl Mismatch {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Mismatch::TypeUnknown => "type_unknown",
            Mismatch::ExtensionMismatch { .. } => "extension_mismatch",
            Mismatch::DangerousContent { .. } => "dangerous_content",
        }
    }
}

/// The extension of a file name: the text after the last dot, lowercased, once trailing dots
/// and spaces are dropped (Windows ignores them, so `a.exe.` is `exe`). `None` for names
/// without one, dotfiles such as `.bashrc`, and suffixes that are not 1–16 ASCII letters or
/// digits.
pub fn extension(filename: &str) -> Option<String> {
    let base = filename.rsplit(['/', '\\']).next().unwrap_or(filename);
    let base = base.trim_end_matches(['.', ' ']);
    let (stem, ext) = base.rsplit_once('.')?;
    let valid = !stem.is_empty()
        && (1..=16).contains(&ext.len())
        && ext.bytes().all(|b| b.is_ascii_alphanumeric());
    valid.then(|| ext.to_ascii_lowercase())
}

/// The kind of a file from its first bytes (at most [`HEAD_LEN`] are looked at). Plain text
/// comes back as `Txt`; [`detect_with_hint`] refines it with the extension.
pub fn detect(head: &[u8]) -> Kind {
    let head = &head[..head.len().min(HEAD_LEN)];
    let text = is_plain_text(head);
    if let Some(kind) = infer::get(head).and_then(|t| kind_from_mime(t.mime_type(), head)) {
        // Short magic numbers (`BM`, `MZ`, `ID3`, `moov` at offset 4) also start ordinary
        // text; real files of these formats carry binary header fields, so a head that is
        // entirely plain text is taken as text. PDF is the exception: it may be all text.
        if kind == Kind::Pdf || !text {
            return kind;
        }
    }
    if let Some(kind) = sniff_markup(head) {
        return kind;
    }
    if text { Kind::Txt } else { Kind::Unknown }
}

/// [`detect`], with plain text refined by the extension: `.csv` gives `Csv`; `.json` gives
/// `Json` when the text starts with `{` or `[`; any other text stays `Txt`.
pub fn detect_with_hint(head: &[u8], ext: Option<&str>) -> Kind {
    let kind = detect(head);
    if kind != Kind::Txt {
        return kind;
    }
    let ext = ext.map(|e| e.trim_start_matches('.'));
    match ext {
        Some(e) if e.eq_ignore_ascii_case("csv") => Kind::Csv,
        Some(e) if e.eq_ignore_ascii_case("json") => match skip_bom_and_space(head).first() {
            Some(b'{' | b'[') => Kind::Json,
            _ => Kind::Txt,
        },
        _ => kind,
    }
}

/// Whether the extension fits the kind.
///
/// - `Unknown` → [`Mismatch::TypeUnknown`].
/// - No extension → allowed; the kind's first extension is the one to use.
/// - The extension is one of the kind's [`Kind::extensions`] → allowed.
/// - `Txt` also accepts any extension no other kind claims (`.py`, `.yaml`, `.ini`…), since
///   text in any such format is served as `text/plain`.
/// - Otherwise → [`Mismatch::ExtensionMismatch`]. A PE named `invoice.pdf.exe` has the
///   extension `exe` and is consistent; rejecting it is the bucket allow-list's job.
pub fn check_extension(kind: Kind, ext: Option<&str>) -> Result<(), Mismatch> {
    if kind == Kind::Unknown {
        return Err(Mismatch::TypeUnknown);
    }
    let Some(ext) = ext.map(|e| e.trim_start_matches('.')) else {
        return Ok(());
    };
    let claims = |k: Kind| k.extensions().iter().any(|e| e.eq_ignore_ascii_case(ext));
    if claims(kind) || (kind == Kind::Txt && !Kind::all().any(claims)) {
        return Ok(());
    }
    Err(Mismatch::ExtensionMismatch {
        kind,
        ext: ext.to_ascii_lowercase(),
    })
}

/// Looks for polyglots: HTML/script markers in text kinds (first 8 KiB) and `<script`/`<html`
/// in binary kinds (first 1 KiB). Markup kinds (HTML/SVG/XML) and `Unknown` pass: they are
/// markup by nature and handled by the serving policy ([`Kind::is_active`]).
pub fn check_content(head: &[u8], kind: Kind) -> Result<(), Mismatch> {
    const TEXT_MARKERS: [&str; 4] = ["<script", "<html", "<svg", "<iframe"];
    const BINARY_MARKERS: [&str; 2] = ["<script", "<html"];
    let (window, markers): (usize, &[&'static str]) = if kind.is_text() {
        (HEAD_LEN, &TEXT_MARKERS)
    } else if kind.is_active() || kind == Kind::Unknown {
        return Ok(());
    } else {
        (POLYGLOT_LEN, &BINARY_MARKERS)
    };
    let head = &head[..head.len().min(window)];
    match markers
        .iter()
        .find(|m| contains_ignore_case(head, m.as_bytes()))
    {
        Some(marker) => Err(Mismatch::DangerousContent { kind, marker }),
        None => Ok(()),
    }
}

/// Whether a detected kind, the head it came from and the name's extension go together:
/// [`check_extension`] (`type_unknown`, `extension_mismatch`), then [`check_content`]
/// (`dangerous_content`).
pub fn check(kind: Kind, head: &[u8], ext: Option<&str>) -> Result<(), Mismatch> {
    check_extension(kind, ext)?;
    check_content(head, kind)
}

/// The whole upload check in one call: [`detect_with_hint`], then [`check`]. Returns the kind
/// when it passes.
pub fn inspect(head: &[u8], ext: Option<&str>) -> Result<Kind, Mismatch> {
    let kind = detect_with_hint(head, ext);
    check(kind, head, ext)?;
    Ok(kind)
}

fn kind_from_mime(mime: &str, head: &[u8]) -> Option<Kind> {
    Some(match mime {
        "image/png" => Kind::Png,
        "image/jpeg" => Kind::Jpeg,
        "image/gif" => Kind::Gif,
        // infer only looks at bytes 8..12; a WebP is a RIFF file.
        "image/webp" if head.starts_with(b"RIFF") => Kind::Webp,
        "image/bmp" => Kind::Bmp,
        "image/tiff" => Kind::Tiff,
        "image/heif" => Kind::Heic,
        "image/avif" => Kind::Avif,
        "application/pdf" => Kind::Pdf,
        "application/zip" => Kind::Zip,
        "application/gzip" => Kind::Gzip,
        DOCX => Kind::Docx,
        XLSX => Kind::Xlsx,
        PPTX => Kind::Pptx,
        "video/mp4" | "video/x-m4v" | "audio/m4a" => Kind::Mp4,
        "video/quicktime" => Kind::Mov,
        "video/webm" => Kind::Webm,
        "audio/mpeg" => Kind::Mp3,
        "audio/x-wav" => Kind::Wav,
        "application/x-executable"
        | "application/vnd.microsoft.portable-executable"
        | "application/x-mach-binary" => Kind::Exe,
        _ => return None,
    })
}

/// WHATWG "rules for identifying an unknown MIME type", markup part: after an optional BOM and
/// whitespace, a case-insensitive tag followed by a space or `>`.
fn sniff_markup(head: &[u8]) -> Option<Kind> {
    const HTML_TAGS: [&str; 17] = [
        "<!doctype html",
        "<html",
        "<head",
        "<script",
        "<iframe",
        "<h1",
        "<div",
        "<font",
        "<table",
        "<a",
        "<style",
        "<title",
        "<b",
        "<body",
        "<br",
        "<p",
        "<!--",
    ];
    let rest = skip_bom_and_space(head);
    let starts = |tag: &str| {
        rest.get(..tag.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(tag.as_bytes()))
    };
    let terminated = |tag: &str| starts(tag) && matches!(rest.get(tag.len()), Some(b' ' | b'>'));
    if terminated("<svg") || starts("<!doctype svg") {
        return Some(Kind::Svg);
    }
    // A comment or XML declaration comes before the real root element: look further in.
    let has = |needle: &str| contains_ignore_case(head, needle.as_bytes());
    if starts("<?xml") || starts("<!--") {
        if has("<html") || has("<!doctype html") {
            return Some(Kind::Html);
        }
        if has("<svg") {
            return Some(Kind::Svg);
        }
        return Some(if starts("<?xml") {
            Kind::Xml
        } else {
            Kind::Html
        });
    }
    if starts("<!doctype html") || HTML_TAGS.iter().any(|tag| terminated(tag)) {
        return Some(Kind::Html);
    }
    None
}

/// Valid UTF-8 (a character cut off by the end of the head counts as valid) with no NUL and
/// no control character other than tab, LF, FF and CR.
fn is_plain_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    valid
        && head
            .iter()
            .all(|&b| b >= 0x20 || matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r'))
}

fn skip_bom_and_space(head: &[u8]) -> &[u8] {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = head
        .iter()
        .position(|b| !matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' '))
        .unwrap_or(head.len());
    &head[start..]
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
#[path = "sniff_tests.rs"]
mod tests;
