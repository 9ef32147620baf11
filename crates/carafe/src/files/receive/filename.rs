//! Sanitising user-supplied file names and deriving their extension.
//!
//! Uploaded files keep the name the user gave them, and that name is later
//! shown in listings and offered back in downloads, where it may be saved to
//! any operating system. [`sanitize`] reduces a hostile name (path
//! traversal, control or bidi override characters, Windows-reserved names,
//! unbounded length) to a safe single path component while keeping ordinary
//! Unicode names such as Korean ones intact. [`extension`] gives the
//! lowercased final extension used for type checks.

use unicode_normalization::UnicodeNormalization;

/// Longest sanitised name, in bytes (a common file-system limit).
pub const MAX_NAME_BYTES: usize = 255;

/// Longest extension kept when a name is truncated, in bytes.
const MAX_EXT_BYTES: usize = 16;

/// Name used when nothing usable is left.
const FALLBACK: &str = "file";

/// Control characters and invisible bidi controls that could reorder text.
fn is_stripped(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Removes whitespace and dots from the end, as Windows silently does.
fn trim_end_dots(s: &str) -> &str {
    s.trim_end_matches(|c: char| c == '.' || c.is_whitespace())
}

/// Whether a stem (name before the first dot) is a Windows device name.
fn is_reserved_stem(stem: &str) -> bool {
    let stem = stem.trim_end().to_ascii_uppercase();
    if matches!(
        stem.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) {
        return true;
    }
    let mut chars = stem.chars();
    let prefix: String = chars.by_ref().take(3).collect();
    let digit = chars.next();
    (prefix == "COM" || prefix == "LPT")
        && matches!(digit, Some('0'..='9' | '¹' | '²' | '³'))
        && chars.next().is_none()
}

/// Largest index `<= max` that is a char boundary of `s`.
fn floor_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// Turns a user-supplied name into a safe, non-empty single file name.
pub fn sanitize(name: &str) -> String {
    let cleaned: String = name.chars().filter(|&c| !is_stripped(c)).nfc().collect();
    let last = cleaned.rsplit(['/', '\\']).next().unwrap_or("");
    let replaced: String = last
        .chars()
        .map(|c| match c {
            '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            _ => c,
        })
        .collect();
    let trimmed = trim_end_dots(replaced.trim());
    if trimmed.chars().all(|c| c == '.') {
        // Empty, or only dots (`.`, `..`, `...`).
        return FALLBACK.to_owned();
    }

    let stem = trimmed.split('.').next().unwrap_or("");
    let mut out = if is_reserved_stem(stem) {
        format!("_{trimmed}")
    } else {
        trimmed.to_owned()
    };
    if out.len() > MAX_NAME_BYTES {
        out = truncate(&out);
    }
    out
}

/// Caps a name at [`MAX_NAME_BYTES`], keeping a short extension if it has one.
fn truncate(name: &str) -> String {
    let ext = name
        .rfind('.')
        .filter(|&dot| dot > 0 && name.len() - dot - 1 <= MAX_EXT_BYTES)
        .map(|dot| &name[dot..])
        .filter(|ext| ext.len() > 1);
    match ext {
        Some(ext) => {
            let stem = &name[..name.len() - ext.len()];
            let cut = floor_boundary(stem, MAX_NAME_BYTES - ext.len());
            let stem = trim_end_dots(&stem[..cut]);
            let stem = if stem.is_empty() { FALLBACK } else { stem };
            format!("{stem}{ext}")
        }
        None => {
            let cut = floor_boundary(name, MAX_NAME_BYTES);
            let out = trim_end_dots(&name[..cut]);
            if out.is_empty() {
                FALLBACK.to_owned()
            } else {
                out.to_owned()
            }
        }
    }
}

/// The lowercased final extension: ASCII alphanumeric, at most 16 chars.
///
/// Dotfiles such as `.bashrc` have no extension. Trailing dots and
/// whitespace are ignored, since Windows ignores them too.
pub fn extension(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let last = trim_end_dots(last);
    let (stem, ext) = last.rsplit_once('.')?;
    if stem.chars().all(|c| c == '.')
        || ext.is_empty()
        || ext.len() > MAX_EXT_BYTES
        || !ext.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    Some(ext.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_paths() {
        assert_eq!(sanitize("../../etc/passwd"), "passwd");
        assert_eq!(sanitize("C:\\Users\\x\\evil.exe"), "evil.exe");
        assert_eq!(sanitize("dir/"), "file");
        assert_eq!(sanitize("C:evil.exe"), "C_evil.exe");
    }

    #[test]
    fn removes_control_and_bidi() {
        assert_eq!(sanitize("a\u{0}b\u{1}c\u{7f}d\u{85}e.txt"), "abcde.txt");
        assert_eq!(sanitize("line\r\nbreak.txt"), "linebreak.txt");
        assert_eq!(sanitize("a\u{202E}fdp.exe"), "afdp.exe");
        assert_eq!(sanitize("\u{2066}x\u{2069}\u{200E}\u{200F}.pdf"), "x.pdf");
    }

    #[test]
    fn replaces_windows_forbidden() {
        assert_eq!(sanitize("a<b>c:d\"e|f?g*h.txt"), "a_b_c_d_e_f_g_h.txt");
    }

    #[test]
    fn trims_and_collapses() {
        assert_eq!(sanitize("  name.txt  "), "name.txt");
        assert_eq!(sanitize("name.txt. . "), "name.txt");
        assert_eq!(sanitize("..."), "file");
        assert_eq!(sanitize("."), "file");
        assert_eq!(sanitize(".."), "file");
        assert_eq!(sanitize(""), "file");
        assert_eq!(sanitize(" \u{0} "), "file");
        assert_eq!(sanitize(".bashrc"), ".bashrc");
        assert_eq!(sanitize("..hidden"), "..hidden");
    }

    #[test]
    fn reserved_names() {
        assert_eq!(sanitize("CON"), "_CON");
        assert_eq!(sanitize("con.txt"), "_con.txt");
        assert_eq!(sanitize("Com1.tar.gz"), "_Com1.tar.gz");
        assert_eq!(sanitize("lpt9"), "_lpt9");
        assert_eq!(sanitize("nul .txt"), "_nul .txt");
        assert_eq!(sanitize("console.txt"), "console.txt");
        assert_eq!(sanitize("COM10"), "COM10");
        assert_eq!(sanitize("LPT"), "LPT");
    }

    #[test]
    fn unicode_kept_and_normalised() {
        assert_eq!(sanitize("보고서_2025Q4.pdf"), "보고서_2025Q4.pdf");
        let nfd = "re\u{301}sume\u{301}.pdf";
        assert_eq!(sanitize(nfd), "r\u{e9}sum\u{e9}.pdf");
        let hangul_nfd: String = "보고서.txt".nfd().collect();
        assert_ne!(hangul_nfd, "보고서.txt");
        assert_eq!(sanitize(&hangul_nfd), "보고서.txt");
    }

    #[test]
    fn caps_length() {
        let long = format!("{}.pdf", "a".repeat(10_000));
        let s = sanitize(&long);
        assert_eq!(s.len(), MAX_NAME_BYTES);
        assert!(s.ends_with("aaa.pdf"));

        let korean = format!("{}.pdf", "가".repeat(10_000));
        let s = sanitize(&korean);
        assert!(s.len() <= MAX_NAME_BYTES && s.ends_with("가.pdf"), "{s}");

        let long_ext = format!("x.{}", "e".repeat(400));
        assert_eq!(sanitize(&long_ext).len(), MAX_NAME_BYTES);

        let no_ext = "가".repeat(1000);
        let s = sanitize(&no_ext);
        assert_eq!(s.len(), 255);
        assert!(s.chars().all(|c| c == '가'));

        let dotted = format!("a{}.{}.pdf", " ".repeat(250), "b".repeat(10));
        assert_eq!(sanitize(&dotted), "a.pdf");
    }

    #[test]
    fn extensions() {
        assert_eq!(extension("invoice.pdf.exe").as_deref(), Some("exe"));
        assert_eq!(extension("archive.tar.gz").as_deref(), Some("gz"));
        assert_eq!(extension("Photo.JPG").as_deref(), Some("jpg"));
        assert_eq!(extension("evil.exe. ").as_deref(), Some("exe"));
        assert_eq!(extension(".config.json").as_deref(), Some("json"));
        assert_eq!(extension(".bashrc"), None);
        assert_eq!(extension("..bashrc"), None);
        assert_eq!(extension("noext"), None);
        assert_eq!(extension("dir.d/noext"), None);
        assert_eq!(extension("a.p-f"), None);
        assert_eq!(extension("a.확장"), None);
        assert_eq!(extension(&format!("a.{}", "x".repeat(17))), None);
        assert_eq!(
            extension(&format!("a.{}", "x".repeat(16))).unwrap().len(),
            16
        );
    }
}
