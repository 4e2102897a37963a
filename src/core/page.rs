//! Cursor pagination: items ordered by their UUIDv7 id; the page token is the
//! last id of the previous page.

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
}

impl PageRequest {
    pub fn parse(page_size: Option<u32>, page_token: Option<&str>) -> Result<Self> {
        let size = match page_size {
            None | Some(0) => DEFAULT_PAGE_SIZE,
            Some(n) => u64::from(n).min(MAX_PAGE_SIZE),
        };
        let after = match page_token.map(str::trim) {
            None | Some("") => None,
            Some(t) => {
                Some(Uuid::parse_str(t).map_err(|_| Error::invalid("page_token is not valid"))?)
            }
        };
        Ok(Self { size, after })
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
                .map(|r| id_of(r).to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((rows, next))
    }
}
