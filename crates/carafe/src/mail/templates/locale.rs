//! Locale tags as templates use them: a small BCP 47 subset written one way (`ko-KR`, `en`,
//! `zh-Hant-TW`), and the fallback chain a lookup walks (`ko-KR → ko → en`).

/// `tag` in Carafe's spelling (language lowercased, script title-cased, region uppercased),
/// or `None` when it is not a language tag: a 2–3 letter language, then up to three subtags
/// of 2–8 letters or digits.
pub fn canonical(tag: &str) -> Option<String> {
    let tag = tag.trim().replace('_', "-");
    let mut parts = tag.split('-');
    let language = parts.next()?;
    if !(2..=3).contains(&language.len()) || !language.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let mut out = language.to_ascii_lowercase();
    for (i, part) in parts.enumerate() {
        if i >= 3
            || !(2..=8).contains(&part.len())
            || !part.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return None;
        }
        out.push('-');
        match part.len() {
            2 if part.bytes().all(|b| b.is_ascii_alphabetic()) => {
                out.push_str(&part.to_ascii_uppercase())
            }
            4 if part.bytes().all(|b| b.is_ascii_alphabetic()) => {
                out.push_str(&part[..1].to_ascii_uppercase());
                out.push_str(&part[1..].to_ascii_lowercase());
            }
            _ => out.push_str(&part.to_ascii_lowercase()),
        }
    }
    Some(out)
}

/// The locales a lookup for `wanted` tries, most specific first, ending with `default`:
/// `ko-KR` with default `en` gives `[ko-KR, ko, en]`.
pub fn chain(wanted: Option<&str>, default: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(wanted) = wanted {
        let mut tag = wanted.to_owned();
        loop {
            out.push(tag.clone());
            match tag.rfind('-') {
                Some(i) => tag.truncate(i),
                None => break,
            }
        }
    }
    if !out.iter().any(|l| l == default) {
        out.push(default.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_written_one_way() {
        assert_eq!(canonical("ko-kr").as_deref(), Some("ko-KR"));
        assert_eq!(canonical("EN").as_deref(), Some("en"));
        assert_eq!(canonical("zh_hant_tw").as_deref(), Some("zh-Hant-TW"));
        assert_eq!(canonical("es-419").as_deref(), Some("es-419"));
        for bad in [
            "",
            "e",
            "english",
            "ko-",
            "ko-K",
            "ko-KR-x-y-z",
            "k0",
            "ko KR",
            "../en",
        ] {
            assert_eq!(canonical(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lookups_fall_back_to_the_language_then_the_default() {
        assert_eq!(chain(Some("ko-KR"), "en"), ["ko-KR", "ko", "en"]);
        assert_eq!(
            chain(Some("zh-Hant-TW"), "en"),
            ["zh-Hant-TW", "zh-Hant", "zh", "en"]
        );
        assert_eq!(chain(Some("en-GB"), "en"), ["en-GB", "en"]);
        assert_eq!(chain(None, "en"), ["en"]);
    }
}
