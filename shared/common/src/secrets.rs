//! Provider tokens at rest: AES-256-GCM with a random 96-bit nonce per value, the user and
//! provider as associated data (a ciphertext moved to another user's row does not decrypt),
//! and a key id in every value so keys can rotate: new values use the current key, old ones
//! still decrypt with theirs until re-encrypted.
//!
//! Stored form: `v1.<key id>.<base64(nonce ‖ ciphertext ‖ tag)>`.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("key ring: {0}")]
    KeyRing(String),
    #[error("encrypted value is malformed")]
    Malformed,
    #[error("no key with id {0}")]
    UnknownKey(String),
    #[error("cannot decrypt: wrong key, wrong owner, or tampered")]
    Decrypt,
}

/// The keys tokens are encrypted with; the first is current.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish()
    }
}

impl KeyRing {
    /// Parses `id:base64key,id:base64key` (32-byte keys), current key first.
    pub fn parse(spec: &str) -> Result<Self, SecretError> {
        let mut keys = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, key) = entry
                .split_once(':')
                .ok_or_else(|| SecretError::KeyRing(format!("`{entry}` is not id:base64key")))?;
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(SecretError::KeyRing(format!("bad key id `{id}`")));
            }
            let bytes = STANDARD
                .decode(key)
                .map_err(|_| SecretError::KeyRing(format!("key `{id}` is not base64")))?;
            if bytes.len() != 32 {
                return Err(SecretError::KeyRing(format!(
                    "key `{id}` must be 32 bytes, is {}",
                    bytes.len()
                )));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(SecretError::KeyRing(format!("key id `{id}` appears twice")));
            }
            keys.push((
                id.to_owned(),
                Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
            ));
        }
        if keys.is_empty() {
            return Err(SecretError::KeyRing("no keys".into()));
        }
        Ok(Self { keys })
    }

    pub fn current_id(&self) -> &str {
        &self.keys[0].0
    }

    fn aad(user: &str, provider: &str) -> Vec<u8> {
        format!("{user}\n{provider}").into_bytes()
    }

    /// Encrypts with the current key, bound to this user and provider.
    pub fn encrypt(&self, plaintext: &str, user: &str, provider: &str) -> String {
        let (id, cipher) = &self.keys[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = Self::aad(user, provider);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory value cannot fail");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        format!("v1.{id}.{}", STANDARD.encode(blob))
    }

    pub fn decrypt(&self, stored: &str, user: &str, provider: &str) -> Result<String, SecretError> {
        let mut parts = stored.splitn(3, '.');
        let (Some("v1"), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SecretError::Malformed);
        };
        let cipher = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, c)| c)
            .ok_or_else(|| SecretError::UnknownKey(id.to_owned()))?;
        let blob = STANDARD.decode(data).map_err(|_| SecretError::Malformed)?;
        if blob.len() < NONCE_LEN + 16 {
            return Err(SecretError::Malformed);
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let aad = Self::aad(user, provider);
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| SecretError::Decrypt)
    }

    /// Whether a stored value was made with an older key (and should be re-encrypted).
    pub fn needs_rotation(&self, stored: &str) -> bool {
        stored.split('.').nth(1) != Some(self.current_id())
    }

    /// Re-encrypts a stored value with the current key.
    pub fn rotate(&self, stored: &str, user: &str, provider: &str) -> Result<String, SecretError> {
        Ok(self.encrypt(&self.decrypt(stored, user, provider)?, user, provider))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn round_trip_with_fresh_nonces() {
        let ring = KeyRing::parse(&format!("k1:{}", key(1))).unwrap();
        let a = ring.encrypt("refresh-token-123", "user-a", "hubspot");
        let b = ring.encrypt("refresh-token-123", "user-a", "hubspot");
        assert_ne!(a, b, "a nonce is never reused");
        assert!(!a.contains("refresh-token"));
        assert_eq!(
            ring.decrypt(&a, "user-a", "hubspot").unwrap(),
            "refresh-token-123"
        );
    }

    #[test]
    fn bound_to_owner_and_tamper_evident() {
        let ring = KeyRing::parse(&format!("k1:{}", key(1))).unwrap();
        let sealed = ring.encrypt("secret", "user-a", "hubspot");
        assert_eq!(
            ring.decrypt(&sealed, "user-b", "hubspot"),
            Err(SecretError::Decrypt)
        );
        assert_eq!(
            ring.decrypt(&sealed, "user-a", "slack"),
            Err(SecretError::Decrypt)
        );
        let mut raw = STANDARD.decode(sealed.rsplit('.').next().unwrap()).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("v1.k1.{}", STANDARD.encode(raw));
        assert_eq!(
            ring.decrypt(&tampered, "user-a", "hubspot"),
            Err(SecretError::Decrypt)
        );
        assert_eq!(
            ring.decrypt("plain text", "user-a", "hubspot"),
            Err(SecretError::Malformed)
        );
    }

    #[test]
    fn keys_rotate_without_losing_old_values() {
        let old = KeyRing::parse(&format!("k1:{}", key(1))).unwrap();
        let sealed = old.encrypt("token", "u", "google");
        let rotated_ring = KeyRing::parse(&format!("k2:{},k1:{}", key(2), key(1))).unwrap();
        assert!(rotated_ring.needs_rotation(&sealed));
        assert_eq!(
            rotated_ring.decrypt(&sealed, "u", "google").unwrap(),
            "token"
        );
        let fresh = rotated_ring.rotate(&sealed, "u", "google").unwrap();
        assert!(fresh.starts_with("v1.k2."));
        assert!(!rotated_ring.needs_rotation(&fresh));
        let new_only = KeyRing::parse(&format!("k2:{}", key(2))).unwrap();
        assert_eq!(new_only.decrypt(&fresh, "u", "google").unwrap(), "token");
        assert_eq!(
            new_only.decrypt(&sealed, "u", "google"),
            Err(SecretError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn bad_key_rings_are_refused() {
        assert!(KeyRing::parse("").is_err());
        assert!(KeyRing::parse("k1").is_err());
        assert!(KeyRing::parse("k1:not-base64!").is_err());
        assert!(KeyRing::parse(&format!("k1:{}", STANDARD.encode([0u8; 16]))).is_err());
        assert!(KeyRing::parse(&format!("k1:{},k1:{}", key(1), key(2))).is_err());
        assert!(KeyRing::parse(&format!("k.1:{}", key(1))).is_err());
        assert!(
            !format!("{:?}", KeyRing::parse(&format!("k1:{}", key(1))).unwrap()).contains("AAAA")
        );
    }
}
