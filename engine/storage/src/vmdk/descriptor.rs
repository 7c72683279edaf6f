//! Descriptor files: the extent list, the parent fields, extent file names
//! kept inside the descriptor's folder.

use std::fs::File;
use std::path::{Component, Path, PathBuf};

use super::{Bad, BadResult, MAX_CAPACITY, MAX_DESCRIPTOR, MAX_EXTENTS, SECTOR, corrupt, read_at};
use crate::error::{Result, StorageError};

/// One line of a descriptor's extent list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// `RW`, `RDONLY` or `NOACCESS`.
    pub access: String,
    /// Its size in sectors.
    pub sectors: u64,
    /// `FLAT`, `SPARSE`, `ZERO`, `VMFS`, …
    pub kind: String,
    /// The file, as written (none for `ZERO`).
    pub file: Option<String>,
    /// Where the extent starts in a flat file, in sectors.
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// `createType`.
    pub create_type: Option<String>,
    /// `parentCID` (`ffffffff` for a disk without a parent).
    pub parent_cid: Option<String>,
    /// `parentFileNameHint`.
    pub parent_hint: Option<String>,
    /// The extents, in disk order.
    pub extents: Vec<ExtentLine>,
}

impl Descriptor {
    /// Parses descriptor text.
    pub(super) fn parse(text: &str) -> BadResult<Descriptor> {
        let mut d = Descriptor::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
                if d.extents.len() >= MAX_EXTENTS {
                    return Err(Bad::Unsupported(format!(
                        "the descriptor lists more than {MAX_EXTENTS} extents"
                    )));
                }
                d.extents
                    .push(parse_extent_line(line).map_err(|why| {
                        Bad::Corrupt(format!("descriptor line {}: {why}", n + 1))
                    })?);
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                let value = value.trim().trim_matches('"').to_owned();
                match key.trim() {
                    "createType" => d.create_type = Some(value),
                    "parentCID" => d.parent_cid = Some(value),
                    "parentFileNameHint" => d.parent_hint = Some(value),
                    _ => {}
                }
            }
        }
        Ok(d)
    }

    /// Refuses a delta disk (one with a parent).
    pub(super) fn check_no_parent(&self) -> BadResult<()> {
        let has_parent = self.parent_hint.as_deref().is_some_and(|h| !h.is_empty())
            || self
                .parent_cid
                .as_deref()
                .is_some_and(|c| !c.eq_ignore_ascii_case("ffffffff"));
        if has_parent {
            return Err(Bad::Unsupported(format!(
                "a delta disk (a VMware snapshot) with parent {}; import the disk it was \
                 taken from, or consolidate the snapshots first",
                self.parent_hint
                    .as_deref()
                    .map(|h| format!("'{h}'"))
                    .unwrap_or_else(|| format!(
                        "CID {}",
                        self.parent_cid.as_deref().unwrap_or("?")
                    ))
            )));
        }
        Ok(())
    }
}

/// `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
fn parse_extent_line(line: &str) -> std::result::Result<ExtentLine, String> {
    let mut rest = line;
    let mut word = || {
        let trimmed = rest.trim_start();
        let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let (w, r) = trimmed.split_at(end);
        rest = r;
        w
    };
    let access = word().to_owned();
    let sectors_text = word();
    let sectors = sectors_text
        .parse::<u64>()
        .map_err(|_| format!("extent size '{sectors_text}' is not a number of sectors"))?;
    let kind = word().to_owned();
    if kind.is_empty() {
        return Err("the extent has no type".into());
    }
    let rest = rest.trim();
    let (file, rest) = if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted
            .find('"')
            .ok_or("the extent's file name has no closing quote")?;
        (Some(quoted[..end].to_owned()), quoted[end + 1..].trim())
    } else {
        (None, rest)
    };
    let offset = if rest.is_empty() {
        0
    } else {
        rest.parse::<u64>()
            .map_err(|_| format!("extent offset '{rest}' is not a number of sectors"))?
    };
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
    })
}

/// Reads a descriptor file (at most 1 MiB).
pub(super) fn read_descriptor_file(path: &Path) -> Result<Descriptor> {
    let file = File::open(path).map_err(|e| StorageError::io(path, "opening", e))?;
    let len = file
        .metadata()
        .map_err(|e| StorageError::io(path, "reading metadata", e))?
        .len();
    if len > MAX_DESCRIPTOR {
        return Err(Bad::Corrupt(format!(
            "a VMDK descriptor of {len} bytes is larger than {MAX_DESCRIPTOR}"
        ))
        .at(path, ""));
    }
    let mut text = vec![0u8; len as usize];
    read_at(&file, &mut text, 0, "reading the descriptor").map_err(|e| e.at(path, ""))?;
    Descriptor::parse(&String::from_utf8_lossy(&text)).map_err(|e| e.at(path, ""))
}

/// Resolves an extent file name against the descriptor's folder (see the
/// module documentation for what is refused).
pub(super) fn resolve_extent(descriptor: &Path, name: &str) -> BadResult<PathBuf> {
    let rel = Path::new(name);
    if name.is_empty() || name.contains('\0') {
        return corrupt("an extent has an empty file name");
    }
    if rel.is_absolute() || rel.components().any(|c| c == Component::ParentDir) {
        return Err(Bad::Unsupported(format!(
            "extent file '{name}' is outside the descriptor's folder (only names relative to it, \
             without '..', are followed)"
        )));
    }
    let folder = descriptor.parent().unwrap_or_else(|| Path::new("."));
    let folder = std::fs::canonicalize(if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    })
    .map_err(|e| Bad::Io("finding the descriptor's folder", e))?;
    let path = folder.join(rel);
    let real = std::fs::canonicalize(&path)
        .map_err(|e| Bad::Corrupt(format!("extent file '{name}' cannot be opened: {e}")))?;
    if !real.starts_with(&folder) {
        return Err(Bad::Unsupported(format!(
            "extent file '{name}' leads outside the descriptor's folder (to '{}')",
            real.display()
        )));
    }
    let meta = std::fs::metadata(&real)
        .map_err(|e| Bad::Corrupt(format!("extent file '{name}' cannot be opened: {e}")))?;
    if !meta.is_file() {
        return Err(Bad::Unsupported(format!(
            "extent file '{name}' is not a regular file"
        )));
    }
    Ok(real)
}

/// Refuses the extent types and access modes we do not read.
pub(super) fn check_kind(e: &ExtentLine) -> BadResult<()> {
    if e.access == "NOACCESS" {
        return Err(Bad::Unsupported(
            "NOACCESS extents are not supported".into(),
        ));
    }
    match e.kind.as_str() {
        "FLAT" | "VMFS" | "SPARSE" | "ZERO" => Ok(()),
        other => Err(Bad::Unsupported(format!(
            "{other} extents (ESX formats) are not supported; FLAT, SPARSE and ZERO are"
        ))),
    }
}

/// Checks a descriptor file for `imago` (which opens its extents itself):
/// no parent, every extent file inside the descriptor's folder. Returns
/// whether every extent is flat or zero (what imago reads).
pub fn check_descriptor(path: &Path) -> Result<bool> {
    let d = read_descriptor_file(path)?;
    d.check_no_parent().map_err(|e| e.at(path, ""))?;
    let mut all_flat = true;
    for e in &d.extents {
        let label = format!("extent '{}': ", e.file.as_deref().unwrap_or(&e.kind));
        check_kind(e).map_err(|b| b.at(path, &label))?;
        if let Some(name) = &e.file {
            resolve_extent(path, name).map_err(|b| b.at(path, &label))?;
        }
        all_flat &= matches!(e.kind.as_str(), "FLAT" | "VMFS" | "ZERO");
    }
    Ok(all_flat)
}

/// The virtual size a descriptor file describes (the sum of its extents).
pub fn descriptor_capacity(path: &Path) -> Result<u64> {
    let d = read_descriptor_file(path)?;
    let mut total: u64 = 0;
    for e in &d.extents {
        total = e
            .sectors
            .checked_mul(SECTOR)
            .and_then(|b| total.checked_add(b))
            .filter(|&t| t <= MAX_CAPACITY)
            .ok_or_else(|| {
                Bad::Corrupt(format!(
                    "the extents add up to more than {MAX_CAPACITY} bytes"
                ))
                .at(path, "")
            })?;
    }
    Ok(total)
}
