use super::*;
use crate::access::Settings as Auth;
use crate::values::HumanDuration;

fn tokens(secret: &str) -> Tokens {
    Tokens::new(&Secrets::from_text(secret), &Auth::default())
}

fn files() -> Scopes {
    Scopes::empty().with(Scope::Files)
}

#[test]
fn a_minted_token_verifies_with_its_claims() {
    let t = tokens(&"s".repeat(32));
    let minted = t
        .mint("user-42", Some(Duration::from_secs(60)), files())
        .unwrap();
    let user = t.verify(&minted.token).unwrap();
    assert_eq!(user.id, "user-42");
    assert_eq!(user.scopes, files());
    assert_eq!(user.expires_at, minted.expires_at);
}

#[test]
fn forged_foreign_and_altered_tokens_fail() {
    let t = tokens(&"s".repeat(32));
    let other = tokens(&"o".repeat(32));
    let minted = other.mint("u", None, files()).unwrap();
    assert_eq!(t.verify(&minted.token), Err(VerifyError::Invalid));
    let mine = t.mint("u", None, files()).unwrap().token;
    let mut parts: Vec<&str> = mine.split('.').collect();
    // An unsigned token ("alg": "none") is refused.
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
    parts[0] = none_header;
    assert_eq!(
        t.verify(&format!("{}.{}.", parts[0], parts[1])),
        Err(VerifyError::Invalid)
    );
    assert_eq!(t.verify("garbage"), Err(VerifyError::Invalid));
    assert_eq!(t.verify(&mine[..mine.len() - 2]), Err(VerifyError::Invalid));
}

#[test]
fn expired_tokens_say_so() {
    let t = tokens(&"s".repeat(32));
    let key = EncodingKey::from_secret(&Secrets::from_text(&"s".repeat(32)).token_key());
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = Claims {
        sub: "u".into(),
        aud: AUDIENCE.into(),
        iss: ISSUER.into(),
        iat: now - 600,
        exp: now - 60,
        scope: String::new(),
        jti: "x".into(),
    };
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
    assert_eq!(t.verify(&token), Err(VerifyError::Expired));
}

#[test]
fn minting_rules() {
    let t = Tokens::new(
        &Secrets::from_text(&"s".repeat(32)),
        &Auth {
            token_max_ttl: HumanDuration(Duration::from_secs(600)),
            token_default_ttl: HumanDuration(Duration::from_secs(300)),
            ..Auth::default()
        },
    );
    assert_eq!(t.mint("", None, files()).unwrap_err(), MintError::BadUserId);
    assert_eq!(
        t.mint("a\nb", None, files()).unwrap_err(),
        MintError::BadUserId
    );
    assert_eq!(
        t.mint(&"x".repeat(256), None, files()).unwrap_err(),
        MintError::BadUserId
    );
    assert!(t.mint(&"사".repeat(255), None, files()).is_ok());
    assert_eq!(
        t.mint("u", Some(Duration::from_secs(601)), files())
            .unwrap_err(),
        MintError::TtlTooLong { max_seconds: 600 }
    );
    assert_eq!(
        t.mint("u", Some(Duration::ZERO), files()).unwrap_err(),
        MintError::TtlTooShort
    );
    let admin = Scopes::empty().with(Scope::Admin);
    assert_eq!(t.mint("u", None, admin).unwrap_err(), MintError::AdminScope);
    let minted = t.mint("u", None, files()).unwrap();
    let left = minted.expires_at - OffsetDateTime::now_utc();
    assert!(
        left.whole_seconds() > 290 && left.whole_seconds() <= 300,
        "{left}"
    );
}
