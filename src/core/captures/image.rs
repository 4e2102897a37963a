//! Recognising an upload as an image by its content, and reading its width
//! and height from the header as the bytes stream past, without decoding
//! the image or holding it whole.

use crate::error::{Error, Result};

/// Bytes needed to tell the formats apart.
pub const SNIFF_BYTES: usize = 12;
/// How much of the start of the file may be kept to find the dimensions
/// (a JPEG's size can sit after large EXIF or ICC segments).
const PROBE_LIMIT: usize = 1024 * 1024;
/// Re-try the header parse after this much more data (not every chunk).
const PROBE_STEP: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    Jpeg,
    Png,
    Webp,
}

impl ImageKind {
    /// From the first [`SNIFF_BYTES`] bytes (fewer never match).
    pub fn sniff(head: &[u8]) -> Result<Self> {
        match head {
            [0xFF, 0xD8, 0xFF, ..] => Ok(Self::Jpeg),
            [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Ok(Self::Png),
            [
                b'R',
                b'I',
                b'F',
                b'F',
                _,
                _,
                _,
                _,
                b'W',
                b'E',
                b'B',
                b'P',
                ..,
            ] => Ok(Self::Webp),
            _ => Err(not_an_image()),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
            Self::Webp => "webp",
        }
    }

    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct {
            "image/jpeg" => Some(Self::Jpeg),
            "image/png" => Some(Self::Png),
            "image/webp" => Some(Self::Webp),
            _ => None,
        }
    }
}

pub fn not_an_image() -> Error {
    Error::UnsupportedMediaType(
        "image must be a JPEG, PNG or WebP image (checked by content)".into(),
    )
}

/// Finds the dimensions in the start of the stream.
#[derive(Default)]
pub struct DimensionProbe {
    prefix: Vec<u8>,
    tried_at: usize,
    found: Option<(u32, u32)>,
}

impl DimensionProbe {
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.found.is_some() || self.prefix.len() >= PROBE_LIMIT {
            return;
        }
        let room = PROBE_LIMIT - self.prefix.len();
        self.prefix
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
        if self.prefix.len() >= self.tried_at + PROBE_STEP || self.prefix.len() == PROBE_LIMIT {
            self.try_parse();
        }
    }

    fn try_parse(&mut self) {
        self.tried_at = self.prefix.len();
        if let Ok(size) = imagesize::blob_size(&self.prefix) {
            let (w, h) = (u32::try_from(size.width), u32::try_from(size.height));
            if let (Ok(w), Ok(h)) = (w, h)
                && w > 0
                && h > 0
            {
                self.found = Some((w, h));
                self.prefix = Vec::new();
            }
        }
    }

    /// Width and height, once the whole upload has been fed.
    pub fn finish(mut self) -> Result<(u32, u32)> {
        if self.found.is_none() {
            self.try_parse();
        }
        self.found.ok_or_else(|| {
            Error::UnsupportedMediaType(
                "image is not a readable JPEG, PNG or WebP (no dimensions in its header)".into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1×1 PNG.
    const PNG: &[u8] = &[
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F,
        0x15, 0xC4, 0x89,
    ];

    #[test]
    fn formats_are_told_by_content() {
        assert_eq!(ImageKind::sniff(PNG).unwrap(), ImageKind::Png);
        assert_eq!(
            ImageKind::sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
            ImageKind::Jpeg
        );
        assert_eq!(
            ImageKind::sniff(b"RIFF\0\0\0\0WEBPVP8 ").unwrap(),
            ImageKind::Webp
        );
        assert!(ImageKind::sniff(b"GIF89a......").is_err());
        assert!(ImageKind::sniff(b"\xFF\xD8").is_err());
    }

    #[test]
    fn dimensions_come_from_the_header_fed_in_pieces() {
        let mut probe = DimensionProbe::default();
        for byte in PNG {
            probe.feed(std::slice::from_ref(byte));
        }
        assert_eq!(probe.finish().unwrap(), (3, 2));
        let mut truncated = DimensionProbe::default();
        truncated.feed(&PNG[..14]);
        assert!(truncated.finish().is_err());
    }
}
