//! Secrets: admin tokens, the sealing key and customers' Segment write keys.
//!
//! Each is a type whose `Debug` redacts it and which has no `Display`, so it
//! cannot reach a log line, a metric or a response by accident. Write keys are
//! sealed at rest with XChaCha20-Poly1305; the sealed form names the key that
//! sealed it, so the sealing key can be rotated.

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

/// Seals and unseals write keys. The key id is derived from the key itself, so
/// nothing but the key has to be configured.
#[derive(Clone)]
pub struct Sealer {
    key_id: String,
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    /// A sealer from the configured key: 32 bytes, base64.
    pub fn from_base64(key: &str) -> Result<Sealer, SecretsError> {
        let bytes = STANDARD.decode(key.trim()).map_err(|_| SecretsError::BadSecretKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SecretsError::BadSecretKey)?;
        let key_id = hex::encode(&Sha256::digest([b"produktly-key-id:".as_slice(), &bytes].concat())[..4]);
        let cipher = XChaCha20Poly1305::new(&bytes.into());
        Ok(Sealer { key_id, cipher })
    }

    /// `v1.<key id>.<base64url(nonce ‖ ciphertext)>`, bound to the workspace so
    /// that a sealed key copied to another workspace does not open.
    pub fn seal(&self, workspace_id: &str, key: &WriteKey) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload { msg: key.expose().as_bytes(), aad: workspace_id.as_bytes() };
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .expect("XChaCha20-Poly1305 encryption has no failure case for in-memory input");
        let sealed = [nonce.as_slice(), &ciphertext].concat();
        format!("{SEALED_PREFIX}.{}.{}", self.key_id, URL_SAFE_NO_PAD.encode(sealed))
    }

    pub fn unseal(&self, workspace_id: &str, sealed: &str) -> Result<WriteKey, UnsealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(SEALED_PREFIX), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(UnsealError::Malformed);
        };
        if key_id != self.key_id {
            return Err(UnsealError::UnknownKey(key_id.to_owned()));
        }
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| UnsealError::Malformed)?;
        if bytes.len() <= NONCE_LEN {
            return Err(UnsealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let payload = Payload { msg: ciphertext, aad: workspace_id.as_bytes() };
        let plain = self.cipher.decrypt(XNonce::from_slice(nonce), payload).map_err(|_| UnsealError::Corrupt)?;
        let key = String::from_utf8(plain).map_err(|_| UnsealError::Corrupt)?;
        Ok(WriteKey::new(&key))
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealer(key id {}, [REDACTED])", self.key_id)
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
    /// PostgreSQL (several instances, production) they must be configured.
    pub fn resolve(settings: &Settings) -> Result<Secrets, SecretsError> {
        let backend = settings.backend().unwrap_or(Backend::Sqlite);
        let mut admin_token_file = None;
        let tokens = if !settings.admin_tokens.is_empty() {
            settings.admin_tokens.clone()
        } else if backend == Backend::Postgres {
            return Err(SecretsError::MissingForPostgres("PRODUKTLY_ADMIN_TOKENS"));
        } else {
            let path = settings.data_dir.join(ADMIN_TOKEN_FILE);
            let token = read_or_generate(&path)?;
            admin_token_file = Some(path);
            vec![token]
        };
        let secret_key = if !settings.secret_key.is_empty() {
            settings.secret_key.clone()
        } else if backend == Backend::Postgres {
            return Err(SecretsError::MissingForPostgres("PRODUKTLY_SECRET_KEY"));
        } else {
            read_or_generate(&settings.data_dir.join(SECRET_KEY_FILE))?
        };
        Ok(Secrets {
            admin_tokens: AdminTokens::new(&tokens),
            sealer: Sealer::from_base64(&secret_key)?,
            admin_token_file,
        })
    }
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
        Sealer::from_base64(&random_base64(32)).unwrap()
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
        assert!(Sealer::from_base64("short").is_err());
        assert!(Sealer::from_base64(&random_base64(16)).is_err());
    }
}
