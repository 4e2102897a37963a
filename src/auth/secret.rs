//! Secrets: `swrm_<kind>_` + 24 base62 characters (~143 random bits) + a
//! 6-character base62 CRC32 checksum. The checksum lets us reject a mistyped
//! or truncated secret without a database query; the database only ever sees
//! the SHA-256 of the whole secret.

use rand::{Rng, distr::Alphanumeric};
use sha2::{Digest, Sha256};

const BODY_LEN: usize = 24;
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    ProvisioningToken,
    DeviceKey,
    EnrollmentCode,
    ApiKey,
}

impl SecretKind {
    pub const ALL: [SecretKind; 4] = [
        Self::ProvisioningToken,
        Self::DeviceKey,
        Self::EnrollmentCode,
        Self::ApiKey,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            Self::ProvisioningToken => "swrm_pt_",
            Self::DeviceKey => "swrm_dk_",
            Self::EnrollmentCode => "swrm_ec_",
            Self::ApiKey => "swrm_ak_",
        }
    }
}

/// A freshly generated secret: the plaintext to show once, and its hash to store.
pub struct NewSecret {
    pub plaintext: String,
    pub hash: String,
}

impl NewSecret {
    /// The first characters, safe to list so a user can recognise a key.
    pub fn display_prefix(&self) -> String {
        self.plaintext.chars().take(12).collect()
    }
}

pub fn generate(kind: SecretKind) -> NewSecret {
    let body: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(BODY_LEN)
        .map(char::from)
        .collect();
    let mut plaintext = format!("{}{body}", kind.prefix());
    let checksum = checksum(&plaintext);
    plaintext.push_str(&checksum);
    let hash = hash(&plaintext);
    NewSecret { plaintext, hash }
}

/// What kind of secret this is, if it is well-formed (prefix, alphabet,
/// length and checksum). Pure: touches nothing.
pub fn parse(secret: &str) -> Option<SecretKind> {
    let kind = SecretKind::ALL
        .into_iter()
        .find(|k| secret.starts_with(k.prefix()))?;
    let rest = &secret[kind.prefix().len()..];
    if rest.len() != BODY_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let (signed, sum) = secret.split_at(secret.len() - CHECKSUM_LEN);
    (checksum(signed) == sum).then_some(kind)
}

/// Lowercase hex SHA-256: the only form in which secrets are stored.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn checksum(signed: &str) -> String {
    let mut n = crc32fast::hash(signed.as_bytes()) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_parse_and_typos_do_not() {
        for kind in SecretKind::ALL {
            let s = generate(kind);
            assert_eq!(parse(&s.plaintext), Some(kind));
            assert_eq!(s.hash, hash(&s.plaintext));
            assert_eq!(s.hash.len(), 64);
            // Change one body character: the checksum must catch it.
            let mut bytes = s.plaintext.clone().into_bytes();
            let i = kind.prefix().len() + 3;
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            assert_eq!(parse(&String::from_utf8(bytes).unwrap()), None);
            assert_eq!(parse(&s.plaintext[..s.plaintext.len() - 1]), None);
        }
        assert_eq!(parse("swrm_dk_"), None);
        assert_eq!(parse("Bearer nonsense"), None);
    }

    #[test]
    fn secrets_are_unique() {
        let a = generate(SecretKind::DeviceKey).plaintext;
        let b = generate(SecretKind::DeviceKey).plaintext;
        assert_ne!(a, b);
    }
}
