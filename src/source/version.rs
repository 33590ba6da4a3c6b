//! The store's version: the facts of its root attributes ([`StoreVersion`]) and the version
//! as this process knows it, read again while a mount runs or pinned ([`Freshness`]). Read
//! by the source, kept in its [`super::Scope`], used by [`crate::provenance`] to tell final
//! files from provisional ones.

use std::sync::RwLock;

use chrono::{DateTime, NaiveDate};
use serde_json::{Map, Value};

/// The store's version facts, from its root attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreVersion {
    /// `last_updated` as the store writes it, e.g. `2026-09-05 02:45:44.987382+00:00`.
    pub last_updated: Option<String>,
    /// `valid_time_stop`: the last day of final ERA5, inclusive.
    pub valid_time_stop: Option<NaiveDate>,
}

impl StoreVersion {
    /// Reads the facts from a store's root attributes (absent or unreadable ones are `None`).
    pub fn of(attributes: &Map<String, Value>) -> Self {
        let text = |k: &str| {
            attributes
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        StoreVersion {
            last_updated: text("last_updated"),
            valid_time_stop: text("valid_time_stop")
                .and_then(|s| NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()),
        }
    }

    /// `last_updated` as seconds since the epoch, if it parses.
    pub fn updated_seconds(&self) -> Option<i64> {
        let s = self.last_updated.as_deref()?.trim();
        ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%:z"]
            .iter()
            .find_map(|f| DateTime::parse_from_str(s, f).ok())
            .map(|t| t.timestamp())
    }
}

/// The store's version as this process knows it: read when the scope is opened, read again
/// while a mount runs ([`super::Source::refresh_version`]), or pinned.
#[derive(Debug, Default)]
pub struct Freshness {
    current: RwLock<StoreVersion>,
    /// The `last_updated` the dataset is pinned to, if any.
    pin: Option<String>,
}

impl Freshness {
    /// The store as it is now, not pinned.
    pub fn new(current: StoreVersion) -> Self {
        Freshness {
            current: RwLock::new(current),
            pin: None,
        }
    }

    /// Pins the dataset to the store version `to` (a `last_updated` value), or to the version
    /// the store has now for `"current"`: files are planned as of that version, and nothing is
    /// rebuilt because the store changed.
    pub fn pin(&mut self, to: &str) {
        let version = match to.trim() {
            "current" => self.current().last_updated.unwrap_or_default(),
            v => v.to_string(),
        };
        self.pin = Some(version);
    }

    /// Whether the dataset is pinned.
    pub fn pinned(&self) -> bool {
        self.pin.is_some()
    }

    /// The store's version as last read.
    pub fn current(&self) -> StoreVersion {
        self.current.read().expect("poisoned").clone()
    }

    /// The version files are planned with: the current one, or the pinned `last_updated`.
    pub fn for_plans(&self) -> StoreVersion {
        let mut v = self.current();
        if let Some(pin) = &self.pin {
            v.last_updated = Some(pin.clone());
        }
        v
    }

    /// Records the store's version as read now; `true` if it changed.
    pub fn update(&self, now: StoreVersion) -> bool {
        let mut current = self.current.write().expect("poisoned");
        let changed = *current != now;
        *current = now;
        changed
    }

    /// `(pinned, actual)` when the dataset is pinned to a version the store no longer has: a
    /// provisional file (whose data may have changed since) cannot be built then.
    pub fn moved_past_pin(&self) -> Option<(String, String)> {
        let pin = self.pin.as_ref()?;
        let actual = self.current().last_updated.unwrap_or_default();
        (*pin != actual).then(|| (pin.clone(), actual))
    }

    /// The version under which cache entries built while chunks were absent stay valid:
    /// `None` (always valid) when pinned.
    pub fn cache_version(&self) -> Option<String> {
        if self.pinned() {
            None
        } else {
            Some(self.current().last_updated.unwrap_or_default())
        }
    }
}
