//! Image files for upload tests: valid headers (what swrm reads: format and
//! dimensions) around deterministic pseudo-random bytes, so every image is
//! distinct and its SHA-256 is known.

use sha2::{Digest, Sha256};

/// A baseline JPEG of `width` × `height`, `len` bytes long in all.
pub fn jpeg(width: u16, height: u16, len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    // APP0 (JFIF).
    out.extend_from_slice(&[
        0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0,
    ]);
    // SOF0: 8-bit, height, width, 3 components.
    out.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08]);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    // SOS, then "entropy-coded" bytes (never 0xFF, so never a marker).
    out.extend_from_slice(&[
        0xFF, 0xDA, 0x00, 0x0C, 3, 1, 0, 2, 0x11, 3, 0x11, 0, 0x3F, 0,
    ]);
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    while out.len() + 2 < len {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push(((state >> 33) as u8).min(0xFE));
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// A PNG header of `width` × `height` (signature and IHDR).
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = vec![
        0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D,
    ];
    out.extend_from_slice(b"IHDR");
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(b"IEND");
    out.extend_from_slice(&[0xAE, 0x42, 0x60, 0x82]);
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
