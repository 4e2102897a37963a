//! HMAC-SHA256 signed download URLs for blobs swrm serves itself:
//! `/blobs/<key>?expires=<unix seconds>&signature=<hex>`, where the
//! signature covers the key and the expiry, so neither can be altered.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::path::Path;

use crate::error::{Error, Result};

/// Shortest signing key accepted from configuration.
pub const MIN_KEY_LEN: usize = 32;
/// Where the generated key is kept, inside the blob folder.
const KEY_FILE: &str = ".url-signing-key";
/// The prefix of every signed path.
pub const PREFIX: &str = "/blobs/";

#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(<redacted>)")
    }
}

/// Why a signed URL was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Expired,
    BadSignature,
}

impl UrlSigner {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    /// The configured key, else the one in `dir` (made once, atomically, so
    /// replicas sharing the folder agree).
    pub fn load(dir: &Path, configured: Option<&str>) -> Result<Self> {
        if let Some(key) = configured {
            if key.len() < MIN_KEY_LEN {
                return Err(Error::invalid(format!(
                    "the URL signing key must be at least {MIN_KEY_LEN} characters"
                )));
            }
            return Ok(Self::new(key.as_bytes()));
        }
        let path = dir.join(KEY_FILE);
        if let Ok(hex_key) = std::fs::read_to_string(&path) {
            return Self::from_file(&hex_key);
        }
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        // Written aside, then linked into place: a concurrent reader sees
        // the whole key or none, and of two racing replicas one key wins.
        let tmp = dir.join(format!("{KEY_FILE}.{}", uuid::Uuid::now_v7()));
        write_private(&tmp, hex::encode(key).as_bytes())?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(Self::new(&key)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::from_file(&std::fs::read_to_string(&path).map_err(io)?)
            }
            Err(e) => Err(io(e)),
        }
    }

    fn from_file(hex_key: &str) -> Result<Self> {
        let key = hex::decode(hex_key.trim())
            .map_err(|_| Error::Internal(format!("{KEY_FILE} is not hex")))?;
        if key.len() < 16 {
            return Err(Error::Internal(format!("{KEY_FILE} is too short")));
        }
        Ok(Self::new(&key))
    }

    fn mac(&self, key: &str, expires: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// The signed path of `key`, valid until `expires` (Unix seconds).
    pub fn sign(&self, key: &str, expires: i64) -> String {
        let signature = hex::encode(self.mac(key, expires).finalize().into_bytes());
        format!("{PREFIX}{key}?expires={expires}&signature={signature}")
    }

    /// Checks a signature (in constant time) and the expiry.
    pub fn verify(
        &self,
        key: &str,
        expires: i64,
        signature: &str,
        now: i64,
    ) -> Result<(), Refusal> {
        let given = hex::decode(signature).map_err(|_| Refusal::BadSignature)?;
        self.mac(key, expires)
            .verify_slice(&given)
            .map_err(|_| Refusal::BadSignature)?;
        if now >= expires {
            return Err(Refusal::Expired);
        }
        Ok(())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

fn io(e: std::io::Error) -> Error {
    Error::Internal(format!("URL signing key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_url_verifies_until_it_expires_and_not_once_altered() {
        let signer = UrlSigner::new(b"0123456789abcdef0123456789abcdef");
        let path = signer.sign("captures/a/b.jpg", 1_000);
        let signature = path.rsplit('=').next().unwrap();
        assert_eq!(
            signer.verify("captures/a/b.jpg", 1_000, signature, 999),
            Ok(())
        );
        assert_eq!(
            signer.verify("captures/a/b.jpg", 1_000, signature, 1_000),
            Err(Refusal::Expired)
        );
        assert_eq!(
            signer.verify("captures/a/c.jpg", 1_000, signature, 999),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            signer.verify("captures/a/b.jpg", 2_000, signature, 999),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn replicas_sharing_a_folder_share_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = UrlSigner::load(dir.path(), None).unwrap();
        let b = UrlSigner::load(dir.path(), None).unwrap();
        assert_eq!(a.key, b.key);
        assert!(UrlSigner::load(dir.path(), Some("short")).is_err());
    }
}
