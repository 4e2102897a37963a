//! Cursor pagination: items ordered by their UUIDv7 id. The page token is
//! opaque to clients: 24 bytes (a sort key and the last id of the previous
//! page) in URL-safe base64, so every 32-character token decodes to a
//! position and a list can later order by a time key without changing the
//! token's shape.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
    sea_query::IntoCondition,
};
use uuid::Uuid;

use crate::error::{Error, Result};

pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 500;

#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    pub size: u64,
    pub after: Option<Uuid>,
    /// The whole position (for lists ordered by a key, then id).
    pub cursor: Option<Cursor>,
}

/// A position in a list: the last item of the previous page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// A sort key before the id (0 for lists ordered by id alone).
    pub key: i64,
    pub id: Uuid,
}

impl Cursor {
    const LEN: usize = 24;

    pub fn encode(&self) -> String {
        let mut bytes = [0u8; Self::LEN];
        bytes[..8].copy_from_slice(&self.key.to_be_bytes());
        bytes[8..].copy_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// `None` unless `token` is 32 URL-safe base64 characters.
    pub fn decode(token: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let bytes: [u8; Self::LEN] = bytes.try_into().ok()?;
        Some(Cursor {
            key: i64::from_be_bytes(bytes[..8].try_into().ok()?),
            id: Uuid::from_slice(&bytes[8..]).ok()?,
        })
    }
}

impl PageRequest {
    pub fn parse(page_size: Option<u32>, page_token: Option<&str>) -> Result<Self> {
        let size = match page_size {
            None | Some(0) => DEFAULT_PAGE_SIZE,
            Some(n) => u64::from(n).min(MAX_PAGE_SIZE),
        };
        let cursor =
            match page_token.map(str::trim) {
                None | Some("") => None,
                Some(t) => Some(Cursor::decode(t).ok_or_else(|| {
                    Error::invalid("page_token is not a page token this API issued")
                })?),
            };
        Ok(Self {
            size,
            after: cursor.map(|c| c.id),
            cursor,
        })
    }

    /// Runs `select` (already filtered to the organization) for this page.
    pub async fn fetch<E, C>(
        &self,
        select: Select<E>,
        id: impl ColumnTrait,
        db: &C,
        id_of: impl Fn(&E::Model) -> Uuid,
    ) -> Result<(Vec<E::Model>, String)>
    where
        E: EntityTrait,
        C: sea_orm::ConnectionTrait,
        E::Model: Send + Sync,
    {
        let mut select = select.order_by_asc(id);
        if let Some(after) = self.after {
            select = select.filter(id.gt(after).into_condition());
        }
        let mut rows = select.limit(self.size + 1).all(db).await?;
        let next = if rows.len() as u64 > self.size {
            rows.truncate(self.size as usize);
            rows.last()
                .map(|r| {
                    Cursor {
                        key: 0,
                        id: id_of(r),
                    }
                    .encode()
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((rows, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_of_the_documented_shape_decodes() {
        let c = Cursor {
            key: -7,
            id: Uuid::now_v7(),
        };
        assert_eq!(c.encode().len(), 32);
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        // Any 32 URL-safe base64 characters name a position.
        assert!(Cursor::decode(&"_".repeat(32)).is_some());
        assert!(Cursor::decode(&"A".repeat(31)).is_none());
        assert!(Cursor::decode("not a token").is_none());
    }
}
