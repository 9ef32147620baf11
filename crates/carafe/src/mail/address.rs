//! Strict parsing of the one mailbox (`a@b.example` or `Name <a@b.example>`) that an API caller
//! names as a sender or a recipient. lettre's own parser is built for well-behaved input: it lets
//! control characters through quoted strings, takes address literals and Unicode local parts
//! that our transports cannot deliver (SMTPUTF8 is not offered), and keeps Unicode domains as
//! they are. Every address that enters a message comes through here first, so a header built
//! from it can carry nothing but one well-formed ASCII address and a display name.
//!
//! Unicode (IDN) domains are converted to their punycode (`xn--`) form with `url`'s IDNA
//! mapping, which is already in the build and is what browsers do; a local part must be ASCII.

use std::{net::IpAddr, str::FromStr};

use lettre::{Address, message::Mailbox};

/// The longest input accepted, in bytes: a 64-byte local part, the `@` and a 255-byte domain,
/// which leaves room for a short display name around a typical address.
pub const MAX_INPUT_BYTES: usize = 320;

/// Why an address was refused: [`AddressError::reason`] is the stable machine word, `Display`
/// the message for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the address is empty")]
    Empty,
    #[error("the address is longer than {MAX_INPUT_BYTES} bytes")]
    TooLong,
    #[error("the address contains a control character (such as CR, LF or NUL)")]
    ControlCharacters,
    #[error("the address has no '@'")]
    MissingAt,
    #[error("only one mailbox is accepted here, not a list or a group")]
    NotSingle,
    #[error(
        "the part before '@' must be ASCII: internationalised local parts (SMTPUTF8) are not \
         offered"
    )]
    NonAsciiLocalPart,
    #[error("the domain after '@' is not a valid domain name")]
    InvalidDomain,
    #[error("the domain must be a name, not an IP address or an address literal")]
    AddressLiteral,
    #[error("not a valid address: expected `name@domain` or `Display Name <name@domain>`")]
    Invalid,
}

impl AddressError {
    /// The stable machine word for this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLong => "too_long",
            Self::ControlCharacters => "control_characters",
            Self::MissingAt => "missing_at",
            Self::NotSingle => "not_single",
            Self::NonAsciiLocalPart => "non_ascii_local_part",
            Self::InvalidDomain => "invalid_domain",
            Self::AddressLiteral => "address_literal",
            Self::Invalid => "invalid",
        }
    }
}

/// Parses one mailbox: `a@b.example`, `Display Name <a@b.example>` or
/// `"Quoted, Name" <a@b.example>`. Refuses any control character (CR, LF and NUL included)
/// anywhere, empty or over-long input, lists and groups, non-ASCII local parts and address
/// literals; converts a Unicode domain to punycode. A blank display name becomes none.
pub fn parse_mailbox(input: &str) -> Result<Mailbox, AddressError> {
    if input.chars().any(char::is_control) {
        return Err(AddressError::ControlCharacters);
    }
    if input.trim().is_empty() {
        return Err(AddressError::Empty);
    }
    if input.len() > MAX_INPUT_BYTES {
        return Err(AddressError::TooLong);
    }
    if !input.contains('@') {
        return Err(AddressError::MissingAt);
    }
    if names_several(input) {
        return Err(AddressError::NotSingle);
    }
    // The addr-spec is what follows the last '<' (or the whole input); its local part is what
    // precedes its last '@'. Looked at before lettre's parser so the refusal says why.
    let addr_spec = input.rsplit_once('<').map_or(input, |(_, spec)| spec);
    let (local, domain) = addr_spec.rsplit_once('@').unwrap_or_default();
    if !local.is_ascii() {
        return Err(AddressError::NonAsciiLocalPart);
    }
    if domain.trim_start().starts_with('[') {
        return Err(AddressError::AddressLiteral);
    }
    let parsed = Mailbox::from_str(input).map_err(|_| AddressError::Invalid)?;
    let name = parsed
        .name
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty());
    let email = ascii_address(&parsed.email)?;
    Ok(Mailbox::new(name, email))
}

/// Checks a mailbox that did not come from [`parse_mailbox`] (its fields are public): the same
/// rules, without the rewriting. The message builder runs it on every mailbox it writes.
pub fn check_mailbox(mailbox: &Mailbox) -> Result<(), AddressError> {
    let name = mailbox.name.as_deref().unwrap_or("");
    let email = mailbox.email.to_string();
    if name.chars().chain(email.chars()).any(char::is_control) {
        return Err(AddressError::ControlCharacters);
    }
    if name.len() + email.len() > MAX_INPUT_BYTES {
        return Err(AddressError::TooLong);
    }
    let email = &mailbox.email;
    if !email.user().is_ascii() {
        return Err(AddressError::NonAsciiLocalPart);
    }
    if is_literal(email.domain()) {
        return Err(AddressError::AddressLiteral);
    }
    if !email.domain().is_ascii() {
        return Err(AddressError::InvalidDomain);
    }
    Ok(())
}

/// The address with an ASCII local part and an ASCII (punycode) domain name, or why not.
fn ascii_address(email: &Address) -> Result<Address, AddressError> {
    let (user, domain) = (email.user(), email.domain());
    if !user.is_ascii() {
        return Err(AddressError::NonAsciiLocalPart);
    }
    if is_literal(domain) {
        return Err(AddressError::AddressLiteral);
    }
    if domain.is_ascii() {
        return Ok(email.clone());
    }
    let ascii = match url::Host::parse(domain) {
        Ok(url::Host::Domain(ascii)) => ascii,
        Ok(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => return Err(AddressError::AddressLiteral),
        Err(_) => return Err(AddressError::InvalidDomain),
    };
    Address::new(user, ascii).map_err(|_| AddressError::InvalidDomain)
}

fn is_literal(domain: &str) -> bool {
    domain.starts_with('[') || domain.parse::<IpAddr>().is_ok()
}

/// Whether the input names more than one mailbox or a group: a ',' or ';' outside a quoted
/// string, or more than one '@' there.
fn names_several(input: &str) -> bool {
    let (mut quoted, mut escaped, mut ats) = (false, false, 0);
    for c in input.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' | ';' if !quoted => return true,
            '@' if !quoted => ats += 1,
            _ => {}
        }
    }
    ats > 1
}

/// Whether `s` is a plausible DNS name (ASCII labels of letters, digits and hyphens).
pub fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use lettre::message::{
        Mailboxes,
        header::{Headers, To},
    };

    use super::*;

    fn reason(input: &str) -> &'static str {
        match parse_mailbox(input) {
            Ok(mailbox) => panic!("{input:?} was accepted as {mailbox}"),
            Err(error) => error.reason(),
        }
    }

    #[test]
    fn accepts_bare_named_and_quoted_mailboxes() {
        let bare = parse_mailbox("a@b.example").unwrap();
        assert_eq!(
            (bare.name.as_deref(), bare.email.to_string()),
            (None, "a@b.example".to_owned())
        );

        let named = parse_mailbox("Display Name <a@b.example>").unwrap();
        assert_eq!(named.name.as_deref(), Some("Display Name"));
        assert_eq!(named.email.to_string(), "a@b.example");

        let quoted = parse_mailbox("\"Doe, Jane\" <jane@b.example>").unwrap();
        assert_eq!(quoted.name.as_deref(), Some("Doe, Jane"));
        assert_eq!(quoted.email.to_string(), "jane@b.example");

        let blank = parse_mailbox("\"  \" <a@b.example>").unwrap();
        assert_eq!(blank.name, None);
    }

    #[test]
    fn refuses_control_characters_anywhere() {
        for input in [
            "a@b.example\r\nBcc: c@d.example",
            "a@b.example\nBcc: c@d.example",
            "Evil\r\nBcc: c@d.example <a@b.example>",
            "\"Evil\rName\" <a@b.example>",
            "\"Evil\nName\" <a@b.example>",
            "a\0@b.example",
            "Name <a@b.example>\0",
            "\"tab\there\" <a@b.example>\u{7f}",
        ] {
            assert_eq!(reason(input), "control_characters", "{input:?}");
        }
    }

    #[test]
    fn refuses_empty_long_and_at_less_input() {
        assert_eq!(reason(""), "empty");
        assert_eq!(reason("   "), "empty");
        let long = format!("{}@{}.example", "a".repeat(64), "b".repeat(250));
        assert_eq!(reason(&long), "too_long");
        assert_eq!(reason("Display Name"), "missing_at");
        assert_eq!(reason("a.b.example"), "missing_at");
    }

    #[test]
    fn refuses_lists_and_groups() {
        assert_eq!(reason("a@b.example, c@d.example"), "not_single");
        assert_eq!(reason("A <a@b.example>, C <c@d.example>"), "not_single");
        assert_eq!(reason("team: a@b.example;"), "not_single");
        assert_eq!(reason("undisclosed-recipients:;@b.example"), "not_single");
        assert_eq!(reason("a@b.example c@d.example"), "not_single");
    }

    #[test]
    fn refuses_non_ascii_local_parts_and_literals() {
        assert_eq!(reason("zoë@b.example"), "non_ascii_local_part");
        assert_eq!(reason("Zoë <zoë@b.example>"), "non_ascii_local_part");
        assert_eq!(reason("a@[127.0.0.1]"), "address_literal");
        assert_eq!(reason("a@127.0.0.1"), "address_literal");
        assert_eq!(reason("Name <a@[IPv6:::1]>"), "address_literal");
    }

    #[test]
    fn converts_unicode_domains_to_punycode() {
        let mailbox = parse_mailbox("Zoë <zoe@Bücher.example>").unwrap();
        assert_eq!(mailbox.email.to_string(), "zoe@xn--bcher-kva.example");
        assert_eq!(mailbox.name.as_deref(), Some("Zoë"));
        assert_eq!(reason("a@exa mple.com"), "invalid");
        check_mailbox(&mailbox).unwrap();
    }

    #[test]
    fn refuses_malformed_input_without_panicking() {
        for input in [
            "@",
            "a@",
            "@b.example",
            "<>",
            "<@>",
            "<a@b.example",
            "a@b.example>",
            "<<a@b.example>>",
            "\"unterminated <a@b.example>",
            "a@@b.example",
            "a@b..example",
            "a@-b.example",
            "Name <a@b.example> trailing",
            "(comment) a@b.example",
        ] {
            assert!(parse_mailbox(input).is_err(), "{input:?} was accepted");
        }
    }

    #[test]
    fn non_ascii_display_name_is_encoded_as_ascii() {
        let mailbox = parse_mailbox("Zoë Dupré <zoe@b.example>").unwrap();
        let mut headers = Headers::new();
        headers.set(To::from(Mailboxes::from(mailbox)));
        let line = headers.to_string();
        assert!(line.is_ascii(), "{line:?}");
        assert!(line.contains("=?utf-8?"), "{line:?}");

        let message = format!("{line}\r\nbody\r\n");
        let parsed = mail_parser::MessageParser::default()
            .parse(message.as_bytes())
            .unwrap();
        let to = parsed.to().and_then(|to| to.first()).unwrap();
        assert_eq!(to.name(), Some("Zoë Dupré"));
        assert_eq!(to.address(), Some("zoe@b.example"));
    }

    #[test]
    fn check_mailbox_refuses_what_parse_would() {
        let address = Address::new("a", "b.example").unwrap();
        let forged = Mailbox::new(Some("Evil\r\nBcc: c@d.example".into()), address.clone());
        assert_eq!(check_mailbox(&forged), Err(AddressError::ControlCharacters));
        check_mailbox(&Mailbox::new(Some("Fine".into()), address)).unwrap();
        let literal = Mailbox::new(None, Address::new("a", "[127.0.0.1]").unwrap());
        assert_eq!(check_mailbox(&literal), Err(AddressError::AddressLiteral));
    }

    #[test]
    fn display_is_the_human_message() {
        let error = parse_mailbox("zoë@b.example").unwrap_err();
        assert_eq!(error.reason(), "non_ascii_local_part");
        assert!(error.to_string().contains("SMTPUTF8"), "{error}");
    }
}
