//! What a file's data is made of, in the store's life: final ERA5, or preliminary ERA5T hours
//! that the store will replace.
//!
//! ARCO-ERA5 says in its root attributes how far final ERA5 goes (`valid_time_stop`, a whole
//! day, inclusive) and when the store last changed (`last_updated`). Hours after
//! `valid_time_stop` are ERA5T: preliminary data that is replaced by final ERA5 some months
//! later. A file holding such hours is *provisional*: its identity includes the store's
//! `last_updated`, so that once the store changes it is a new file, built afresh, never the
//! old bytes; a file of final hours keeps its identity (and its cache entries) across store
//! updates.
//!
//! Everything here is decided from metadata at plan time, so a file's size (and so these
//! attributes) is known before it is built. A file's time (its mtime and ctime on the mount) is
//! derived from the data, the same on every machine and after every remount: the valid time of
//! its last hour; for a provisional file the store's `last_updated` if that is later.

use chrono::NaiveDateTime;
use serde_json::{json, Value};

use crate::layout::AttrValue;
use crate::select::Resolved;
use crate::source::{Scope, StoreVersion};

/// The provenance of one planned file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The store's version facts when the file was planned.
    pub store: StoreVersion,
    /// The file's hours after `valid_time_stop` (preliminary ERA5T): first, last and how many.
    pub era5t: Option<(NaiveDateTime, NaiveDateTime, usize)>,
    /// The valid time of the file's last hour (`None` for a file without a time axis).
    pub last_time: Option<NaiveDateTime>,
}

impl Provenance {
    /// The provenance of a file over the selected times `time` of `source`.
    pub fn of(scope: &Scope, time: Option<&Resolved>) -> Self {
        let store = scope.freshness.for_plans();
        let (_, encoding) = scope.time();
        let instants: Vec<NaiveDateTime> = time
            .map(|t| {
                t.labels
                    .iter()
                    .map(|&v| encoding.instant(v as i64))
                    .collect()
            })
            .unwrap_or_default();
        let last_time = instants.iter().max().copied();
        let era5t = store.valid_time_stop.and_then(|stop| {
            let first_preliminary = stop.succ_opt()?.and_hms_opt(0, 0, 0)?;
            let late: Vec<&NaiveDateTime> = instants
                .iter()
                .filter(|t| **t >= first_preliminary)
                .collect();
            let first = **late.iter().min()?;
            let last = **late.iter().max()?;
            Some((first, last, late.len()))
        });
        Provenance {
            store,
            era5t,
            last_time,
        }
    }

    /// Whether the file holds preliminary hours that the store may still replace.
    pub fn provisional(&self) -> bool {
        self.era5t.is_some()
    }

    /// What the identity of the file adds to its selection of the store's version facts it
    /// writes ([`Provenance::attributes`]): the store's `last_updated` and `valid_time_stop`
    /// for a provisional file (its bytes are those of that store version), that the store
    /// gives no `valid_time_stop` for a file of unknown status, nothing for a final one (its
    /// bytes do not depend on the store's version).
    pub fn identity_part(&self) -> Option<String> {
        let stop = self.store.valid_time_stop;
        if self.provisional() {
            Some(format!(
                "store last_updated {} valid_time_stop {}",
                self.store.last_updated.as_deref().unwrap_or("unknown"),
                stop.map_or("unknown".into(), |d| d.to_string())
            ))
        } else {
            stop.is_none()
                .then(|| "store valid_time_stop unknown".to_string())
        }
    }

    /// The file's time, seconds since the epoch: the valid time of its last hour, or the store's
    /// `last_updated` if the file is provisional and that is later; 0 without either.
    pub fn mtime(&self) -> i64 {
        let data = self.last_time.map_or(0, |t| t.and_utc().timestamp());
        // Parsed only for provisional files (a million final files parsed it for nothing).
        match self.provisional().then(|| self.store.updated_seconds()) {
            Some(Some(updated)) => data.max(updated),
            _ => data,
        }
    }

    /// Global attributes saying what the file is made of. A final file's attributes do not
    /// depend on the store's version (its bytes stay the same across store updates).
    pub fn attributes(&self) -> Vec<(String, AttrValue)> {
        let text = |k: &str, v: String| (k.to_string(), AttrValue::Text(v));
        match (&self.era5t, self.store.valid_time_stop) {
            (None, None) => vec![text(
                "sodeda_data_status",
                "unknown: the store gives no valid_time_stop".into(),
            )],
            (None, Some(_)) => vec![text(
                "sodeda_data_status",
                "final ERA5 (every hour on or before the store's valid_time_stop)".into(),
            )],
            (Some((first, last, n)), stop) => vec![
                text(
                    "sodeda_data_status",
                    "preliminary ERA5T: holds hours after the store's valid_time_stop, which \
                     the store replaces with final ERA5 later"
                        .into(),
                ),
                text(
                    "sodeda_era5t_hours",
                    format!("{} to {} ({n} time steps)", hour(first), hour(last)),
                ),
                text(
                    "sodeda_store_valid_time_stop",
                    stop.map_or("unknown".into(), |d| d.to_string()),
                ),
                text(
                    "sodeda_store_last_updated",
                    self.store
                        .last_updated
                        .clone()
                        .unwrap_or_else(|| "unknown".into()),
                ),
            ],
        }
    }

    /// The provenance as JSON (the mount's `user.sodeda.provenance`, `list --json`).
    pub fn to_json(&self) -> Value {
        json!({
            "status": if self.provisional() { "provisional" } else if self.store.valid_time_stop.is_some() { "final" } else { "unknown" },
            "era5t_hours": self.era5t.map(|(a, b, n)| json!({"first": hour(&a), "last": hour(&b), "count": n})),
            "store_last_updated": self.store.last_updated,
            "store_valid_time_stop": self.store.valid_time_stop.map(|d| d.to_string()),
            "last_time": self.last_time.map(|t| hour(&t)),
        })
    }
}

fn hour(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use serde_json::Map;

    #[test]
    fn store_version_parses_the_arco_attributes() {
        let attrs = json!({"last_updated": "2026-09-05 02:45:44.987382+00:00",
                           "valid_time_stop": "2026-05-31"});
        let v = StoreVersion::of(attrs.as_object().unwrap());
        assert_eq!(v.valid_time_stop, NaiveDate::from_ymd_opt(2026, 5, 31));
        assert_eq!(v.updated_seconds(), Some(1_788_576_344));
        let none = StoreVersion::of(&Map::new());
        assert_eq!(none.updated_seconds(), None);
        assert_eq!(none.valid_time_stop, None);
    }
}
