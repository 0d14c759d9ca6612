//! Who may call the API: named bearer tokens, each with a role.
//!
//! Every `/api/v1` route requires `Authorization: Bearer <token>` and one
//! [`Access`] level; a token's [`Role`] grants some of them:
//!
//! | role | `ingest` | `read` | `act` | `admin` |
//! |---|---|---|---|---|
//! | `ingest` | yes | | | |
//! | `viewer` | | yes | | |
//! | `operator` | | yes | yes | |
//! | `admin` | yes | yes | yes | yes |
//!
//! Tokens are configured by their SHA-256 only, as entries
//! `name:role:sha256:<64 lowercase hex digits>`, so a leaked configuration
//! reveals no token; the one plain-text exception is the legacy single token,
//! which becomes an admin named [`LEGACY_NAME`]. A presented token is hashed
//! and compared with every configured hash in constant time, so neither the
//! time taken nor which entry matched tells a guesser anything. Tokens and
//! hashes never print: `Debug` shows names and roles only, and no error
//! message repeats a value that could be a secret.
//!
//! A wrong or missing token is answered 401; a known caller whose role does
//! not grant the route's access, 403. Past the check, the [`Caller`] is a
//! request extension, so handlers (the audit trail) can record who acted.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use rand::TryRng;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::problem::Problem;

/// The name the legacy plain-text token is known by in logs and the audit
/// trail, so it can be told apart from named tokens.
pub const LEGACY_NAME: &str = "api-token";

/// Shortest plain-text token accepted: shorter ones are too easy to guess.
const MIN_TOKEN_LEN: usize = 16;

/// Longest token name: names appear in logs and the audit trail.
const MAX_NAME_LEN: usize = 64;

/// What a caller is allowed to do, as a set of routes: each route requires
/// exactly one level, and roles grant levels (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Hand in platform events (`POST /api/v1/events`).
    Ingest,
    /// Read workflows and the Salesforce streams' status.
    Read,
    /// Act on one workflow (resume, retry, skip, cancel, terminate, pause,
    /// unpause).
    Act,
    /// Everything else: the audit export, bulk actions, dead letters.
    Admin,
}

impl Access {
    /// Every level, for listing which roles grant one.
    pub const ALL: [Access; 4] = [Access::Ingest, Access::Read, Access::Act, Access::Admin];

    /// The level's name in problems and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Ingest => "ingest",
            Access::Read => "read",
            Access::Act => "act",
            Access::Admin => "admin",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a token is for; configured with the token and reported with every
/// caller, so a role is the unit operators grant and audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A system that hands in events (e.g. a Salesforce outbound relay).
    Ingest,
    /// Someone who watches workflows.
    Viewer,
    /// Someone who watches workflows and acts on single ones.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, in order of growing power.
    pub const ALL: [Role; 4] = [Role::Ingest, Role::Viewer, Role::Operator, Role::Admin];

    /// The role's name in entries, problems and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may use routes that require `access`: the one
    /// place that decides it.
    pub fn grants(self, access: Access) -> bool {
        match self {
            Role::Ingest => access == Access::Ingest,
            Role::Viewer => access == Access::Read,
            Role::Operator => matches!(access, Access::Read | Access::Act),
            Role::Admin => true,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Defect;

    fn from_str(text: &str) -> Result<Self, Defect> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| Defect::Role(shown(text)))
    }
}

/// Who made a request, put in its extensions once the token is checked, so
/// handlers can record who did what and with which role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's configured name.
    pub name: String,
    /// The token's role.
    pub role: Role,
}

/// What is wrong with one configured entry or plain-text token. Never holds
/// a value that could be a secret.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Defect {
    /// Too short to resist guessing.
    #[error("the token must be at least {MIN_TOKEN_LEN} characters long")]
    TooShort,
    /// Would not survive an HTTP header.
    #[error("the token may only contain visible ASCII characters")]
    NotVisibleAscii,
    /// Not four `:`-separated fields.
    #[error("expected `name:role:sha256:<64 hex digits>`, found {0} `:`-separated field(s)")]
    Shape(usize),
    /// A name that would not read well in logs and the audit trail.
    #[error("the name must be 1 to {MAX_NAME_LEN} letters, digits, `-`, `_`, `.` or `@`")]
    Name,
    /// Not one of the four roles (shown only if it cannot be a secret).
    #[error("the role {} is not one of ingest, viewer, operator, admin", quoted(.0.as_deref()))]
    Role(Option<String>),
    /// A hash algorithm other than SHA-256 (shown only if it cannot be a
    /// secret).
    #[error("the hash algorithm {} is not `sha256`", quoted(.0.as_deref()))]
    Algorithm(Option<String>),
    /// A hash of the wrong length.
    #[error(
        "the hash must be 64 lowercase hex digits (the SHA-256 of the token), not {0} characters"
    )]
    HashLength(usize),
    /// A hash with other characters than `0-9a-f`.
    #[error("the hash must be lowercase hex digits (`0-9`, `a-f`) only")]
    HashDigits,
}

/// Why the configured tokens cannot be used, naming where the problem is
/// (setting or file, and entry or line) and never a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One entry or token is malformed.
    #[error("{at}: {defect}")]
    Invalid {
        /// Where: a setting or file, with the entry or line.
        at: String,
        /// What is wrong.
        defect: Defect,
    },
    /// Two tokens share a name, so callers could not be told apart.
    #[error("{at}: the name `{name}` is already used ({first})")]
    DuplicateName {
        /// Where the second use is.
        at: String,
        /// The name.
        name: String,
        /// Where the first use is.
        first: String,
    },
    /// Two entries share a token, so its caller would be ambiguous.
    #[error("{at}: the token is the same as `{other}`'s; give every client its own token")]
    DuplicateToken {
        /// Where the second entry is.
        at: String,
        /// The name of the entry with the same token.
        other: String,
    },
    /// The operating system gave no randomness for a new token.
    #[error("cannot draw random bytes for a new token")]
    Entropy(#[source] rand::rngs::SysError),
}

/// A SHA-256 digest of a token. Never prints. Its `==` serves only to find
/// duplicates in the configuration; requests are checked with `ct_eq`.
#[derive(Clone, PartialEq, Eq)]
struct Hash([u8; 32]);

impl Hash {
    fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    fn parse(hex: &str) -> Result<Self, Defect> {
        let length = hex.chars().count();
        if length != 64 {
            return Err(Defect::HashLength(length));
        }
        if hex.len() != 64 {
            return Err(Defect::HashDigits);
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Ok(Self(bytes))
    }

    fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

fn nibble(digit: u8) -> Result<u8, Defect> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        _ => Err(Defect::HashDigits),
    }
}

/// One configured token.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    role: Role,
    hash: Hash,
}

impl Entry {
    /// Reads `name:role:sha256:<hex>`.
    fn parse(text: &str) -> Result<Self, Defect> {
        let fields: Vec<&str> = text.split(':').map(str::trim).collect();
        let [name, role, algorithm, hex] = fields[..] else {
            return Err(Defect::Shape(fields.len()));
        };
        let name = checked_name(name)?;
        let role = role.parse()?;
        if algorithm != "sha256" {
            return Err(Defect::Algorithm(shown(algorithm)));
        }
        let hash = Hash::parse(hex)?;
        Ok(Self { name, role, hash })
    }
}

fn checked_name(name: &str) -> Result<String, Defect> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(allowed) {
        return Err(Defect::Name);
    }
    Ok(name.to_owned())
}

fn checked_token(token: &str) -> Result<(), Defect> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(Defect::TooShort);
    }
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(Defect::NotVisibleAscii);
    }
    Ok(())
}

/// A field as an error may show it: only when shorter than any token q2c
/// accepts and plainly printable, so a secret pasted into the wrong field is
/// never repeated.
fn shown(field: &str) -> Option<String> {
    (field.len() < MIN_TOKEN_LEN && field.bytes().all(|byte| byte.is_ascii_graphic()))
        .then(|| field.to_owned())
}

fn quoted(field: Option<&str>) -> String {
    field.map_or_else(|| "given".to_owned(), |field| format!("`{field}`"))
}

/// Every configured token: cheap to clone, shared by all routes.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Arc<[Entry]>,
}

impl Tokens {
    /// Starts collecting tokens from the settings.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Whether no token is configured: then every `/api/v1` request is 401,
    /// which `q2c serve` refuses to start with.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Who `presented` belongs to. The token is hashed, and the hash compared
    /// with every entry's in constant time without stopping at a match, so
    /// the time taken says nothing about the token or which entry it is.
    pub fn identify(&self, presented: &str) -> Option<Caller> {
        let hash = Hash::of(presented);
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (position, entry) in (0u64..).zip(self.entries.iter()) {
            let same = entry.hash.0[..].ct_eq(&hash.0[..]);
            index.conditional_assign(&position, same);
            found |= same;
        }
        if !bool::from(found) {
            return None;
        }
        let entry = self.entries.get(usize::try_from(index).ok()?)?;
        Some(Caller {
            name: entry.name.clone(),
            role: entry.role,
        })
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.entries
                    .iter()
                    .map(|entry| (&entry.name, entry.role.as_str())),
            )
            .finish()
    }
}

/// Collects tokens from several sources, checking each entry and that names
/// and tokens are unique across all of them. Every method takes the
/// source's label (a setting's name, or a file's path with its setting) for
/// its error messages.
#[derive(Debug, Default)]
pub struct Builder {
    entries: Vec<Entry>,
    /// Where each entry came from, to name the first of two duplicates.
    origins: Vec<String>,
}

impl Builder {
    /// Adds the legacy plain-text token as an admin named [`LEGACY_NAME`],
    /// so deployments that predate roles keep working unchanged.
    pub fn legacy(&mut self, origin: &str, token: &str) -> Result<&mut Self, Error> {
        checked_token(token).map_err(|defect| Error::Invalid {
            at: origin.to_owned(),
            defect,
        })?;
        self.add(
            origin.to_owned(),
            Entry {
                name: LEGACY_NAME.to_owned(),
                role: Role::Admin,
                hash: Hash::of(token),
            },
        )
    }

    /// Adds the entries of a setting, separated by commas or newlines; errors
    /// count entries from 1, empty ones not counted.
    pub fn list(&mut self, origin: &str, text: &str) -> Result<&mut Self, Error> {
        let entries = text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|entry| !entry.is_empty());
        for (number, entry) in (1..).zip(entries) {
            self.parse_and_add(format!("{origin}, entry {number}"), entry)?;
        }
        Ok(self)
    }

    /// Adds the entries of a file, one per line; blank lines and lines
    /// starting with `#` are skipped. Errors count lines from 1.
    pub fn file(&mut self, origin: &str, text: &str) -> Result<&mut Self, Error> {
        for (number, line) in (1..).zip(text.lines()) {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.parse_and_add(format!("{origin}, line {number}"), line)?;
        }
        Ok(self)
    }

    /// The tokens collected so far, leaving the builder empty.
    pub fn build(&mut self) -> Tokens {
        Tokens {
            entries: std::mem::take(&mut self.entries).into(),
        }
    }

    fn parse_and_add(&mut self, at: String, text: &str) -> Result<&mut Self, Error> {
        match Entry::parse(text) {
            Ok(entry) => self.add(at, entry),
            Err(defect) => Err(Error::Invalid { at, defect }),
        }
    }

    fn add(&mut self, at: String, entry: Entry) -> Result<&mut Self, Error> {
        for (known, origin) in self.entries.iter().zip(&self.origins) {
            if known.name == entry.name {
                return Err(Error::DuplicateName {
                    at,
                    name: entry.name,
                    first: origin.clone(),
                });
            }
            if known.hash == entry.hash {
                return Err(Error::DuplicateToken {
                    at,
                    other: known.name.clone(),
                });
            }
        }
        self.entries.push(entry);
        self.origins.push(at);
        Ok(self)
    }
}

/// The entry that configures `token` as `name` with `role`:
/// `name:role:sha256:<hex>`. What `q2c token new` and `q2c token hash`
/// print, so operators never write hashes by hand.
pub fn entry_line(name: &str, role: Role, token: &str) -> Result<String, Defect> {
    let name = checked_name(name)?;
    checked_token(token)?;
    Ok(format!("{name}:{role}:sha256:{}", Hash::of(token).to_hex()))
}

/// A fresh token: 32 bytes from the operating system's generator as 64 hex
/// digits, far beyond guessing and safe in a header.
pub fn new_token() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(Error::Entropy)?;
    Ok(Hash(bytes).to_hex())
}

/// Wraps `route` so that each of its methods requires a token whose role
/// grants `access`: 401 without a known token, 403 when the role falls
/// short, and the [`Caller`] in the request's extensions otherwise.
///
/// Give it the whole method router of a path (`get(...)`, `post(...)`,
/// merged if need be); methods chained on after it are not guarded. Other
/// methods on the path keep their 405.
pub fn require<S>(tokens: &Tokens, access: Access, route: MethodRouter<S>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let guard = Guard {
        tokens: tokens.clone(),
        access,
    };
    route.route_layer(axum::middleware::from_fn_with_state(guard, authorize))
}

/// What one route's middleware checks against.
#[derive(Clone)]
struct Guard {
    tokens: Tokens,
    access: Access,
}

async fn authorize(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let caller = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|(_, credentials)| guard.tokens.identify(credentials.trim()));
    let Some(caller) = caller else {
        return Problem::unauthorized().into_response();
    };
    if !caller.role.grants(guard.access) {
        tracing::info!(
            caller = %caller.name,
            role = %caller.role,
            access = %guard.access,
            path = %request.uri().path(),
            "request refused: the role does not grant the route's access"
        );
        let granting: Vec<&str> = Role::ALL
            .into_iter()
            .filter(|role| role.grants(guard.access))
            .map(Role::as_str)
            .collect();
        return Problem::forbidden(caller.role.as_str(), guard.access.as_str(), &granting)
            .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use axum::Extension;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    const CI_TOKEN: &str = "ci-token-0123456789abcdef";
    const ANNA_TOKEN: &str = "anna-token-0123456789abcdef";

    fn hex_of(token: &str) -> String {
        Hash::of(token).to_hex()
    }

    fn two_tokens() -> Tokens {
        let list = format!(
            "ci:ingest:sha256:{},\n anna:operator:sha256:{}",
            hex_of(CI_TOKEN),
            hex_of(ANNA_TOKEN)
        );
        Tokens::builder()
            .list("Q2C_API_TOKENS", &list)
            .unwrap()
            .build()
    }

    fn invalid_entry(text: &str) -> String {
        let error = Tokens::builder().list("Q2C_API_TOKENS", text).unwrap_err();
        error.to_string()
    }

    #[test]
    fn the_sha256_of_a_known_token_is_the_published_one() {
        assert_eq!(
            hex_of("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn roles_grant_exactly_their_access() {
        let granted = |role: Role| -> Vec<Access> {
            Access::ALL
                .into_iter()
                .filter(|access| role.grants(*access))
                .collect()
        };
        assert_eq!(granted(Role::Ingest), [Access::Ingest]);
        assert_eq!(granted(Role::Viewer), [Access::Read]);
        assert_eq!(granted(Role::Operator), [Access::Read, Access::Act]);
        assert_eq!(granted(Role::Admin), Access::ALL);
    }

    #[test]
    fn good_entries_from_a_setting_and_a_file_are_all_known() {
        let file = format!(
            "# tokens of the billing team\n\n  ops:viewer:sha256:{}  \n# the end\n",
            hex_of("ops-token-0123456789abcdef")
        );
        let tokens = Tokens::builder()
            .legacy("Q2C_API_TOKEN", "legacy-token-0123456789")
            .unwrap()
            .list(
                "Q2C_API_TOKENS",
                &format!(",ci:ingest:sha256:{},,", hex_of(CI_TOKEN)),
            )
            .unwrap()
            .file("Q2C_API_TOKENS_FILE /etc/q2c/tokens", &file)
            .unwrap()
            .build();
        let caller = |token: &str| tokens.identify(token).map(|c| (c.name, c.role));
        assert_eq!(
            caller("legacy-token-0123456789"),
            Some((LEGACY_NAME.to_owned(), Role::Admin))
        );
        assert_eq!(caller(CI_TOKEN), Some(("ci".to_owned(), Role::Ingest)));
        assert_eq!(
            caller("ops-token-0123456789abcdef"),
            Some(("ops".to_owned(), Role::Viewer))
        );
        assert_eq!(caller("ops-token-0123456789abcde"), None);
        assert_eq!(caller(""), None);
    }

    #[test]
    fn identify_finds_every_entry_and_nothing_else() {
        let tokens = two_tokens();
        let ci = tokens.identify(CI_TOKEN).unwrap();
        assert_eq!(
            ci,
            Caller {
                name: "ci".into(),
                role: Role::Ingest
            }
        );
        let anna = tokens.identify(ANNA_TOKEN).unwrap();
        assert_eq!((anna.name.as_str(), anna.role), ("anna", Role::Operator));
        // The hash itself is not a token.
        assert_eq!(tokens.identify(&hex_of(CI_TOKEN)), None);
        assert_eq!(tokens.identify("ci-token-0123456789abcdeF"), None);
        assert_eq!(Tokens::default().identify(CI_TOKEN), None);
    }

    #[test]
    fn each_kind_of_bad_entry_is_named_with_its_place() {
        let hex = hex_of(CI_TOKEN);
        assert_eq!(
            invalid_entry(&format!("ok:viewer:sha256:{hex}, {CI_TOKEN}")),
            "Q2C_API_TOKENS, entry 2: expected `name:role:sha256:<64 hex digits>`, found 1 `:`-separated field(s)"
        );
        assert_eq!(
            invalid_entry(&format!("a b:viewer:sha256:{hex}")),
            "Q2C_API_TOKENS, entry 1: the name must be 1 to 64 letters, digits, `-`, `_`, `.` or `@`"
        );
        assert_eq!(
            invalid_entry(&format!(":viewer:sha256:{hex}")),
            "Q2C_API_TOKENS, entry 1: the name must be 1 to 64 letters, digits, `-`, `_`, `.` or `@`"
        );
        assert_eq!(
            invalid_entry(&format!("ci:Admin:sha256:{hex}")),
            "Q2C_API_TOKENS, entry 1: the role `Admin` is not one of ingest, viewer, operator, admin"
        );
        assert_eq!(
            invalid_entry(&format!("ci:admin:md5:{hex}")),
            "Q2C_API_TOKENS, entry 1: the hash algorithm `md5` is not `sha256`"
        );
        assert_eq!(
            invalid_entry("ci:admin:sha256:abc123"),
            "Q2C_API_TOKENS, entry 1: the hash must be 64 lowercase hex digits (the SHA-256 of the token), not 6 characters"
        );
        assert_eq!(
            invalid_entry(&format!("ci:admin:sha256:{}é", &hex[..63])),
            "Q2C_API_TOKENS, entry 1: the hash must be lowercase hex digits (`0-9`, `a-f`) only"
        );
        assert_eq!(
            invalid_entry(&format!("ci:admin:sha256:{}", hex.to_uppercase())),
            "Q2C_API_TOKENS, entry 1: the hash must be lowercase hex digits (`0-9`, `a-f`) only"
        );
    }

    #[test]
    fn a_bad_line_of_a_file_is_named_by_its_number() {
        let text = format!(
            "# comment\n\nci:ingest:sha256:{}\nci2:root:sha256:{}\n",
            hex_of(CI_TOKEN),
            hex_of(ANNA_TOKEN)
        );
        let error = Tokens::builder()
            .file("Q2C_API_TOKENS_FILE /etc/q2c/tokens", &text)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "Q2C_API_TOKENS_FILE /etc/q2c/tokens, line 4: the role `root` is not one of ingest, viewer, operator, admin"
        );
    }

    #[test]
    fn names_and_tokens_are_unique_across_sources() {
        let error = Tokens::builder()
            .list(
                "Q2C_API_TOKENS",
                &format!("ci:ingest:sha256:{}", hex_of(CI_TOKEN)),
            )
            .unwrap()
            .file(
                "Q2C_API_TOKENS_FILE tokens.txt",
                &format!("\nci:admin:sha256:{}", hex_of(ANNA_TOKEN)),
            )
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "Q2C_API_TOKENS_FILE tokens.txt, line 2: the name `ci` is already used (Q2C_API_TOKENS, entry 1)"
        );

        let error = Tokens::builder()
            .legacy("Q2C_API_TOKEN", CI_TOKEN)
            .unwrap()
            .list(
                "Q2C_API_TOKENS",
                &format!("api-token:viewer:sha256:{}", hex_of(ANNA_TOKEN)),
            )
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "Q2C_API_TOKENS, entry 1: the name `api-token` is already used (Q2C_API_TOKEN)"
        );

        let error = Tokens::builder()
            .legacy("Q2C_API_TOKEN", CI_TOKEN)
            .unwrap()
            .list(
                "Q2C_API_TOKENS",
                &format!("ci:viewer:sha256:{}", hex_of(CI_TOKEN)),
            )
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "Q2C_API_TOKENS, entry 1: the token is the same as `api-token`'s; give every client its own token"
        );
    }

    #[test]
    fn a_legacy_token_is_checked_like_before() {
        let error = |token: &str| {
            Tokens::builder()
                .legacy("Q2C_API_TOKEN", token)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error("short"),
            "Q2C_API_TOKEN: the token must be at least 16 characters long"
        );
        assert_eq!(
            error("has a space in it ok?"),
            "Q2C_API_TOKEN: the token may only contain visible ASCII characters"
        );
    }

    #[test]
    fn no_message_repeats_a_secret_put_in_the_wrong_field() {
        let secret = "s3cret-0123456789abcdef";
        for text in [
            secret.to_owned(),
            format!("ci:{secret}"),
            format!("ci:{secret}:sha256:{}", hex_of(CI_TOKEN)),
            format!("ci:admin:{secret}:{}", hex_of(CI_TOKEN)),
            format!("ci:admin:sha256:{secret}"),
            format!("{secret}:admin:sha256:{}", hex_of(CI_TOKEN)).replace('-', " "),
        ] {
            let message = invalid_entry(&text);
            assert!(!message.contains("s3cret"), "{message}");
        }
        let message = Tokens::builder()
            .legacy("Q2C_API_TOKEN", "s3cret 0123456789")
            .unwrap_err()
            .to_string();
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn debug_shows_names_and_roles_but_no_token_or_hash() {
        let tokens = Tokens::builder()
            .legacy("Q2C_API_TOKEN", "legacy-token-0123456789")
            .unwrap()
            .list(
                "Q2C_API_TOKENS",
                &format!("ci:ingest:sha256:{}", hex_of(CI_TOKEN)),
            )
            .unwrap()
            .build();
        let printed = format!("{tokens:?}");
        assert_eq!(printed, r#"{"api-token": "admin", "ci": "ingest"}"#);
        let mut builder = Tokens::builder();
        builder
            .list(
                "Q2C_API_TOKENS",
                &format!("ci:ingest:sha256:{}", hex_of(CI_TOKEN)),
            )
            .unwrap();
        let printed = format!("{builder:?} {:?}", Hash::of(CI_TOKEN));
        assert!(!printed.contains(&hex_of(CI_TOKEN)[..8]), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }

    #[test]
    fn entry_lines_configure_the_token_they_were_made_from() {
        let token = new_token().unwrap();
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(token, new_token().unwrap());
        let line = entry_line("deploy-bot", Role::Viewer, &token).unwrap();
        assert!(line.starts_with("deploy-bot:viewer:sha256:"), "{line}");
        assert!(!line.contains(&token));
        let tokens = Tokens::builder().file("test", &line).unwrap().build();
        assert_eq!(
            tokens.identify(&token),
            Some(Caller {
                name: "deploy-bot".into(),
                role: Role::Viewer
            })
        );
        assert_eq!(entry_line("a b", Role::Admin, &token), Err(Defect::Name));
        assert_eq!(entry_line("a", Role::Admin, "short"), Err(Defect::TooShort));
    }

    async fn call(app: &axum::Router, token: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::builder().uri("/who");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_guarded_route_sees_its_caller_or_answers_401_or_403() {
        let tokens = two_tokens();
        let who = |Extension(caller): Extension<Caller>| async move {
            format!("{} as {}", caller.name, caller.role)
        };
        let app = axum::Router::new().route("/who", require(&tokens, Access::Act, get(who)));

        assert_eq!(
            call(&app, Some(ANNA_TOKEN)).await,
            (StatusCode::OK, "anna as operator".to_owned())
        );
        let (status, body) = call(&app, Some(CI_TOKEN)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["type"], "https://q2c.invalid/problems/forbidden");
        assert_eq!(problem["role"], "ingest");
        assert_eq!(problem["access"], "act");
        assert_eq!(
            problem["detail"],
            "role `ingest` may not do this: the route needs `act` access, which operator and admin tokens have"
        );
        assert!(!body.contains(CI_TOKEN), "{body}");
        let (status, body) = call(&app, Some("wrong-token-0123456789")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(!body.contains("wrong-token"), "{body}");
        assert_eq!(call(&app, None).await.0, StatusCode::UNAUTHORIZED);
    }
}
