//! `swrm admin import-devices FILE.csv`: a factory list becomes devices and
//! one-time provisioning tokens, all or nothing.
//!
//! Columns, in this order: `name, serial, group, location, tags` (all but
//! `name` may be empty or left out; a first row starting with `name` is a
//! header). `group` and `location` are an id or the exact name of one of
//! the organization's; `tags` are separated by `;`. Every line is checked
//! before anything is written and every bad line is reported by its number;
//! then the whole file is one transaction. The tokens go to a new file
//! (never an existing one) readable by its owner only (mode 0600), written
//! before the commit and removed if the import fails.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use std::{collections::HashMap, path::Path};
use uuid::Uuid;

use super::{
    Core,
    device_batch::{self, NewDevice},
};
use crate::{
    auth::OrgWrite,
    error::Error,
    store::{
        OrgTx,
        entities::{device_group, location},
    },
};

/// Most lines in one file (a transaction of twice as many rows).
pub const MAX_LINES: usize = 1_000_000;

/// Why nothing was imported: every problem found, each naming its line.
#[derive(Debug)]
pub struct ImportFailed(pub Vec<String>);

impl std::fmt::Display for ImportFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "nothing imported:")?;
        for problem in &self.0 {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ImportFailed {}

impl From<Error> for ImportFailed {
    fn from(e: Error) -> Self {
        Self(vec![e.to_string()])
    }
}

/// Imports `csv` into the organization of `access`; writes the tokens to
/// `tokens_out`. Answers the number of devices created.
pub async fn import_devices(
    core: &Core,
    access: &OrgWrite,
    csv: &Path,
    tokens_out: &Path,
) -> Result<usize, ImportFailed> {
    let file = std::fs::File::open(csv)
        .map_err(|e| ImportFailed(vec![format!("cannot read {}: {e}", csv.display())]))?;
    let (lines, inputs, mut problems) = parse(file);
    if inputs.is_empty() && problems.is_empty() {
        return Err(ImportFailed(vec!["the file lists no devices".into()]));
    }
    let label = |i: usize| format!("line {}: ", lines[i]);
    let tx = core.store.org_read(access.org_id()).await?;
    let places = Places::load(&tx).await?;
    tx.commit().await?;
    let inputs: Vec<NewDevice> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, mut input)| {
            for (kind, field) in [
                ("group", &mut input.group_id),
                ("location", &mut input.location_id),
            ] {
                if let Err(e) = places.resolve(kind, field) {
                    problems.push(format!("{}{e}", label(i)));
                    *field = None;
                }
            }
            input
        })
        .collect();
    let checked = match device_batch::check_all(&inputs, &label) {
        Ok(checked) if problems.is_empty() => checked,
        Ok(_) => Vec::new(),
        Err(errors) => {
            problems.extend(errors.iter().map(ToString::to_string));
            Vec::new()
        }
    };
    if !problems.is_empty() {
        problems.sort_by_key(|p| line_of(p));
        return Err(ImportFailed(problems));
    }

    let mut out = new_private_file(tokens_out)?;
    let written = async {
        let mut tx = core.store.org_tx(access.org_id()).await?;
        let created = device_batch::insert(core, &mut tx, checked, &label).await?;
        device_batch::record_created(core, &tx, access, &created).await?;
        let mut w = csv::Writer::from_writer(&mut out);
        let io = |e: csv::Error| Error::Internal(format!("writing {}: {e}", tokens_out.display()));
        w.write_record([
            "line",
            "name",
            "serial_number",
            "device_id",
            "provisioning_token",
            "expires_at",
        ])
        .map_err(io)?;
        for (i, (device, token)) in created.iter().enumerate() {
            w.write_record([
                lines[i].to_string().as_str(),
                &device.name,
                device.serial_number.as_deref().unwrap_or_default(),
                &device.id.to_string(),
                &token.token,
                &super::rfc3339(token.expires_at),
            ])
            .map_err(io)?;
        }
        w.flush()
            .map_err(|e| Error::Internal(format!("writing {}: {e}", tokens_out.display())))?;
        drop(w);
        out.sync_all()
            .map_err(|e| Error::Internal(format!("writing {}: {e}", tokens_out.display())))?;
        tx.commit().await?;
        Ok::<_, Error>(created.len())
    }
    .await;
    let written = written.map_err(|e| {
        // The tokens of devices that were never created are worthless.
        let _ = std::fs::remove_file(tokens_out);
        ImportFailed::from(e)
    })?;
    if let Err(e) = core.store.refresh_statistics().await {
        // The devices are in; stale statistics only cost speed.
        tracing::warn!(error = %e, "statistics not refreshed after the import");
    }
    Ok(written)
}

/// The line numbers and devices of a CSV file, and every malformed line.
fn parse(file: std::fs::File) -> (Vec<u64>, Vec<NewDevice>, Vec<String>) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(std::io::BufReader::new(file));
    let (mut lines, mut inputs, mut problems) = (Vec::new(), Vec::new(), Vec::new());
    for (n, record) in reader.records().enumerate() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let line = record.position().map_or(n as u64 + 1, |p| p.line());
        let field = |i: usize| record.get(i).filter(|v| !v.is_empty()).map(str::to_owned);
        if n == 0 && field(0).is_some_and(|f| f.eq_ignore_ascii_case("name")) {
            continue; // the header
        }
        if record.iter().all(str::is_empty) {
            continue; // a blank line
        }
        if record.len() > 5 {
            problems.push(format!(
                "line {line}: {} columns, at most 5 (name, serial, group, location, tags)",
                record.len()
            ));
            continue;
        }
        if inputs.len() == MAX_LINES {
            problems.push(format!(
                "line {line}: more than {MAX_LINES} devices in one file"
            ));
            break;
        }
        lines.push(line);
        inputs.push(NewDevice {
            name: field(0).unwrap_or_default(),
            serial_number: field(1),
            group_id: field(2),
            location_id: field(3),
            tags: field(4)
                .map(|t| t.split(';').map(|s| s.trim().to_owned()).collect())
                .unwrap_or_default(),
        });
    }
    (lines, inputs, problems)
}

/// The organization's groups and locations, by id and by name.
struct Places {
    groups: HashMap<String, Vec<Uuid>>,
    locations: HashMap<String, Vec<Uuid>>,
}

impl Places {
    async fn load(tx: &OrgTx) -> Result<Self, Error> {
        let mut groups: HashMap<String, Vec<Uuid>> = HashMap::new();
        for g in device_group::Entity::find()
            .filter(device_group::Column::OrgId.eq(tx.org_id()))
            .all(tx.conn())
            .await?
        {
            groups.entry(g.name).or_default().push(g.id);
        }
        let mut locations: HashMap<String, Vec<Uuid>> = HashMap::new();
        for l in location::Entity::find()
            .filter(location::Column::OrgId.eq(tx.org_id()))
            .all(tx.conn())
            .await?
        {
            locations.entry(l.name).or_default().push(l.id);
        }
        Ok(Self { groups, locations })
    }

    /// Turns a name into its id; an id stays (checked at insert).
    fn resolve(&self, kind: &str, field: &mut Option<String>) -> Result<(), String> {
        let Some(value) = field.as_deref() else {
            return Ok(());
        };
        if Uuid::parse_str(value).is_ok() {
            return Ok(());
        }
        let by_name = if kind == "group" {
            &self.groups
        } else {
            &self.locations
        };
        match by_name.get(value).map(Vec::as_slice) {
            Some([id]) => {
                *field = Some(id.to_string());
                Ok(())
            }
            Some(_) => Err(format!(
                "{kind} {value:?} names more than one {kind}; use its id"
            )),
            None => Err(format!("{kind} {value:?} not found")),
        }
    }
}

/// `line 12: …` sorts by 12.
fn line_of(problem: &str) -> u64 {
    problem
        .strip_prefix("line ")
        .and_then(|p| p.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A file that did not exist, readable and writable by its owner only.
fn new_private_file(path: &Path) -> Result<std::fs::File, ImportFailed> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(|e| {
        ImportFailed(vec![format!(
            "cannot create {} (it must not exist yet): {e}",
            path.display()
        )])
    })
}
