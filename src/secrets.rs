//! Secrets: admin tokens, the sealing key and customers' Segment write keys.
//!
//! Each is a type whose `Debug` redacts it and which has no `Display`, so it
//! cannot reach a log line, a metric or a response by accident. Write keys are
//! sealed at rest with XChaCha20-Poly1305; the sealed form names the key that
//! sealed it, so the sealing key can be rotated.

use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Backend, Settings};

const SEALED_PREFIX: &str = "v1";
const NONCE_LEN: usize = 24;
const ADMIN_TOKEN_FILE: &str = "admin-token";
const SECRET_KEY_FILE: &str = "secret-key";

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{0} is required with PostgreSQL; generate one with `openssl rand -base64 32`")]
    MissingForPostgres(&'static str),
    #[error("PRODUKTLY_SECRET_KEY must be 32 random bytes in base64 (e.g. `openssl rand -base64 32`)")]
    BadSecretKey,
    #[error("refusing a weak secret with PostgreSQL: {0}")]
    Weak(String),
    #[error("could not read or write {path}: {source}")]
    File { path: String, source: std::io::Error },
}

#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    #[error("the sealed write key is malformed")]
    Malformed,
    #[error("the write key was sealed with key {0}, which is not configured")]
    UnknownKey(String),
    #[error("the sealed write key does not decrypt with its key")]
    Corrupt,
}

/// A customer's Segment write key, in the clear. Only delivery exposes it.
#[derive(Clone)]
pub struct WriteKey(SecretString);

impl WriteKey {
    pub fn new(key: &str) -> WriteKey {
        WriteKey(SecretString::from(key))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// What the admin app may show: an ellipsis and the last four characters.
    pub fn hint(&self) -> String {
        let key = self.expose();
        let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
        format!("…{tail}")
    }
}

impl fmt::Debug for WriteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WriteKey([REDACTED])")
    }
}

/// The configured admin tokens, kept only as digests and compared in constant time.
#[derive(Clone)]
pub struct AdminTokens {
    digests: Vec<[u8; 32]>,
}

impl AdminTokens {
    pub fn new<S: AsRef<str>>(tokens: &[S]) -> AdminTokens {
        AdminTokens { digests: tokens.iter().map(|t| digest(t.as_ref())).collect() }
    }

    /// Whether `candidate` is one of the tokens. Every token is compared, so the
    /// time taken says nothing about which one nearly matched.
    pub fn verify(&self, candidate: &str) -> bool {
        let candidate = digest(candidate);
        self.digests.iter().fold(subtle::Choice::from(0), |found, d| found | d.ct_eq(&candidate)).into()
    }
}

impl fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminTokens([{} REDACTED])", self.digests.len())
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// One sealing key and the id sealed values name it by. The id is derived from
/// the key itself, so nothing but the key has to be configured.
#[derive(Clone)]
struct SealingKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl SealingKey {
    /// 32 bytes, base64.
    fn from_base64(key: &str) -> Result<SealingKey, SecretsError> {
        let bytes = STANDARD.decode(key.trim()).map_err(|_| SecretsError::BadSecretKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SecretsError::BadSecretKey)?;
        let id = hex::encode(&Sha256::digest([b"produktly-key-id:".as_slice(), &bytes].concat())[..4]);
        Ok(SealingKey { id, cipher: XChaCha20Poly1305::new(&bytes.into()) })
    }
}

/// Seals write keys with the current sealing key; unseals with whichever
/// configured key (current or previous) sealed them, so that the sealing key
/// can be rotated: configure the new key and the old one as previous, run
/// `reseal`, then drop the old one.
#[derive(Clone)]
pub struct Sealer {
    current: SealingKey,
    previous: Vec<SealingKey>,
}

impl Sealer {
    /// A sealer from the configured keys (base64, 32 bytes each).
    pub fn new(current: &str, previous: &[&str]) -> Result<Sealer, SecretsError> {
        Ok(Sealer {
            current: SealingKey::from_base64(current)?,
            previous: previous.iter().map(|key| SealingKey::from_base64(key)).collect::<Result<_, _>>()?,
        })
    }

    /// `v1.<key id>.<base64url(nonce ‖ ciphertext)>`, bound to the workspace so
    /// that a sealed key copied to another workspace does not open.
    pub fn seal(&self, workspace_id: &str, key: &WriteKey) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload { msg: key.expose().as_bytes(), aad: workspace_id.as_bytes() };
        let ciphertext = self
            .current
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .expect("XChaCha20-Poly1305 encryption has no failure case for in-memory input");
        let sealed = [nonce.as_slice(), &ciphertext].concat();
        format!("{SEALED_PREFIX}.{}.{}", self.current.id, URL_SAFE_NO_PAD.encode(sealed))
    }

    pub fn unseal(&self, workspace_id: &str, sealed: &str) -> Result<WriteKey, UnsealError> {
        let (key_id, body) = parts(sealed)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == key_id)
            .ok_or_else(|| UnsealError::UnknownKey(key_id.to_owned()))?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| UnsealError::Malformed)?;
        if bytes.len() <= NONCE_LEN {
            return Err(UnsealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let payload = Payload { msg: ciphertext, aad: workspace_id.as_bytes() };
        let plain = key.cipher.decrypt(XNonce::from_slice(nonce), payload).map_err(|_| UnsealError::Corrupt)?;
        let key = String::from_utf8(plain).map_err(|_| UnsealError::Corrupt)?;
        Ok(WriteKey::new(&key))
    }

    /// Whether a sealed value was sealed with another key than the current one.
    pub fn is_stale(&self, sealed: &str) -> bool {
        parts(sealed).map_or(true, |(key_id, _)| key_id != self.current.id)
    }
}

/// The key id and the sealed body of `v1.<key id>.<body>`.
fn parts(sealed: &str) -> Result<(&str, &str), UnsealError> {
    let mut parts = sealed.splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(SEALED_PREFIX), Some(key_id), Some(body)) => Ok((key_id, body)),
        _ => Err(UnsealError::Malformed),
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealer(key id {}, {} previous, [REDACTED])", self.current.id, self.previous.len())
    }
}

/// The secrets the service runs with.
#[derive(Clone, Debug)]
pub struct Secrets {
    pub admin_tokens: AdminTokens,
    pub sealer: Sealer,
    /// The file the admin token was read from, when it was generated.
    pub admin_token_file: Option<PathBuf>,
}

impl Secrets {
    /// The configured secrets. On the embedded SQLite default, missing ones are
    /// generated into the data folder on first run and reused afterwards; with
    /// PostgreSQL (several instances, production) they must be configured,
    /// strong, and not the ones generated for SQLite.
    pub fn resolve(settings: &Settings) -> Result<Secrets, SecretsError> {
        let postgres = settings.backend().unwrap_or(Backend::Sqlite) == Backend::Postgres;
        let mut admin_token_file = None;
        let tokens: Vec<String> = if !settings.admin_tokens.is_empty() {
            settings.admin_tokens.iter().map(|t| t.expose_secret().to_owned()).collect()
        } else if postgres {
            return Err(SecretsError::MissingForPostgres("PRODUKTLY_ADMIN_TOKENS"));
        } else {
            let path = settings.data_dir.join(ADMIN_TOKEN_FILE);
            let token = read_or_generate(&path)?;
            admin_token_file = Some(path);
            vec![token]
        };
        let secret_key = if !settings.secret_key.expose_secret().is_empty() {
            settings.secret_key.expose_secret().to_owned()
        } else if postgres {
            return Err(SecretsError::MissingForPostgres("PRODUKTLY_SECRET_KEY"));
        } else {
            read_or_generate(&settings.data_dir.join(SECRET_KEY_FILE))?
        };
        if postgres {
            check_strength(settings, &tokens, &secret_key)?;
        }
        let previous: Vec<&str> = settings.previous_secret_keys.iter().map(|k| k.expose_secret()).collect();
        Ok(Secrets {
            admin_tokens: AdminTokens::new(&tokens),
            sealer: Sealer::new(&secret_key, &previous)?,
            admin_token_file,
        })
    }
}

/// Shortest admin token accepted with PostgreSQL.
const MIN_TOKEN_CHARS: usize = 32;

/// Secrets fit for production: long admin tokens, a sealing key that is not
/// a pattern, and none of the secrets generated for the SQLite default.
fn check_strength(settings: &Settings, tokens: &[String], secret_key: &str) -> Result<(), SecretsError> {
    if tokens.iter().any(|t| t.chars().count() < MIN_TOKEN_CHARS) {
        return Err(SecretsError::Weak(format!(
            "each of PRODUKTLY_ADMIN_TOKENS must be at least {MIN_TOKEN_CHARS} characters"
        )));
    }
    let distinct: HashSet<u8> = STANDARD.decode(secret_key.trim()).unwrap_or_default().into_iter().collect();
    if distinct.len() < 16 {
        return Err(SecretsError::Weak("PRODUKTLY_SECRET_KEY is not random (too few distinct bytes)".into()));
    }
    for (file, secret) in [(ADMIN_TOKEN_FILE, tokens.first().map(String::as_str)), (SECRET_KEY_FILE, Some(secret_key))]
    {
        let generated = std::fs::read_to_string(settings.data_dir.join(file)).ok();
        if generated.is_some_and(|g| Some(g.trim()) == secret.map(str::trim)) {
            return Err(SecretsError::Weak(format!(
                "the {file} generated for the embedded SQLite default may not be used with PostgreSQL"
            )));
        }
    }
    Ok(())
}

/// The secret kept in the file, created (32 random bytes, base64, mode 0600)
/// when missing. Only the file's path is logged, never its content.
fn read_or_generate(path: &Path) -> Result<String, SecretsError> {
    let file_error = |source| SecretsError::File { path: path.display().to_string(), source };
    match std::fs::read_to_string(path) {
        Ok(existing) => return Ok(existing.trim().to_owned()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(file_error(e)),
        Err(_) => {}
    }
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(file_error)?;
    }
    let secret = random_base64(32);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(file_error)?;
    file.write_all(format!("{secret}\n").as_bytes()).map_err(file_error)?;
    tracing::warn!(path = %path.display(), "generated a new secret (kept there for later runs)");
    Ok(secret)
}

/// `len` random bytes in standard base64.
pub fn random_base64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(&random_base64(32), &[]).unwrap()
    }

    #[test]
    fn seal_round_trips_and_is_bound_to_the_workspace() {
        let sealer = sealer();
        let sealed = sealer.seal("ws_1", &WriteKey::new("wk_secret_3f9a"));
        assert!(!sealed.contains("wk_secret"));
        assert_eq!(sealer.unseal("ws_1", &sealed).unwrap().expose(), "wk_secret_3f9a");
        assert!(matches!(sealer.unseal("ws_2", &sealed), Err(UnsealError::Corrupt)));
        assert!(matches!(sealer.unseal("ws_1", "v1.x"), Err(UnsealError::Malformed)));
    }

    #[test]
    fn a_key_sealed_under_another_key_is_named_not_opened() {
        let sealed = sealer().seal("ws", &WriteKey::new("k"));
        assert!(matches!(sealer().unseal("ws", &sealed), Err(UnsealError::UnknownKey(_))));
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let key = WriteKey::new("wk_secret_3f9a");
        assert_eq!(key.hint(), "…3f9a");
        assert!(!format!("{key:?}").contains("secret"));
        let tokens = AdminTokens::new(&["admin-secret"]);
        assert!(!format!("{tokens:?}").contains("admin-secret"));
        assert!(tokens.verify("admin-secret"));
        assert!(!tokens.verify("admin-secre"));
    }

    #[test]
    fn the_secret_key_must_be_32_bytes_of_base64() {
        assert!(Sealer::new("short", &[]).is_err());
        assert!(Sealer::new(&random_base64(16), &[]).is_err());
    }

    #[test]
    fn keys_sealed_under_a_previous_key_open_and_are_stale() {
        let (old, new) = (random_base64(32), random_base64(32));
        let sealed = Sealer::new(&old, &[]).unwrap().seal("ws", &WriteKey::new("wk"));
        let rotated = Sealer::new(&new, &[old.as_str()]).unwrap();
        assert_eq!(rotated.unseal("ws", &sealed).unwrap().expose(), "wk");
        assert!(rotated.is_stale(&sealed));
        let resealed = rotated.seal("ws", &WriteKey::new("wk"));
        assert!(!rotated.is_stale(&resealed));
        assert!(Sealer::new(&new, &[]).unwrap().unseal("ws", &sealed).is_err(), "without the old key it does not open");
    }
}
