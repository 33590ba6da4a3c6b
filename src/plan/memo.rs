//! Planning many similar lines at once: what a catalog's lines share is done once.
//!
//! A catalog of a million deskriptors repeats its parts: 72 hours times 13,889 boxes has 72
//! distinct `time` selectors and 13,889 boxes, each written the same way on many lines. A
//! [`PlanMemo`] keeps, by key and the selector's text as written, the selector's canonical
//! form and its resolution against the scope, and by its text the `variable` part; a line
//! then costs a scan of its JSON, a few lookups, its identity and its name. Sizes are kept by
//! shape (see `size_key`), so a layout is built once per shape.
//!
//! Invariant: an entry made here equals the one [`Plan::entry`](super::Plan::entry) makes
//! from [`Deskriptor::parse`](crate::deskriptor::Deskriptor::parse) of the same line. Only a
//! line that plans without error is taken here; any other (and any line whose keys are
//! escaped in JSON) goes the whole way, which gives its error.

use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use super::{
    add_whole_axes, attributes_part, entry_of, file_dims, finish, planned_variables,
    provenance_key, Names,
};
use super::{Entry, PlanOptions, PlannedVariable};
use crate::deskriptor::{
    canonical_member, canonical_of_members, canonical_variables, parse_name, parse_selector,
    parse_variables,
};
use crate::provenance::Provenance;
use crate::select::{self, Resolved};
use crate::source::Scope;

/// Distinct parts kept at most; the memo starts again beyond (a file of all-distinct lines
/// gains nothing from it and must not grow it without bound).
const MAX_PARTS: usize = 1 << 16;

/// What planning has learnt from earlier lines of one catalog over one scope with one set
/// of options (make a new one for another): sizes by shape, selectors and variable lists by
/// their text. Belongs to one thread.
#[derive(Default)]
pub struct PlanMemo {
    /// Exact file sizes by `size_key`.
    pub(super) sizes: HashMap<String, u64>,
    /// The size key being made.
    pub(super) size_key: String,
    /// By `<key>\0<selector as written>`.
    selectors: HashMap<Box<str>, Rc<SelectorPart>>,
    /// By the `variable` value as written.
    variables: HashMap<Box<str>, Rc<VariablePart>>,
    /// The lookup key being made.
    key: String,
}

/// Hash maps of this module: keys are texts of this process, a fast hasher will do.
type HashMap<K, V> = hashbrown::HashMap<K, V>;

impl fmt::Debug for PlanMemo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlanMemo")
            .field("sizes", &self.sizes.len())
            .field("selectors", &self.selectors.len())
            .field("variables", &self.variables.len())
            .finish()
    }
}

/// One selector as written under one key: its canonical form and its resolution; for `time`,
/// also the provenance of the hours it selects and its part of the size key.
struct SelectorPart {
    /// `"key":<canonical JSON>`.
    member: String,
    resolved: Resolved,
    provenance: Option<(Provenance, String)>,
}

/// One `variable` value as written: the names, the planned variables, the file's dimensions
/// and the identity's part of the attributes these copy from the store.
struct VariablePart {
    names: Vec<String>,
    /// `"variable":[...]`.
    member: String,
    planned: Vec<PlannedVariable>,
    file_dims: Vec<String>,
    attributes: String,
}

impl PlanMemo {
    /// The part of selector `text` under `key`; `None` when it is not a good selector of a
    /// coordinate of `source`.
    fn selector(
        &mut self,
        line: usize,
        key: &str,
        text: &str,
        scope: &Scope,
    ) -> Option<Rc<SelectorPart>> {
        self.key.clear();
        self.key.push_str(key);
        self.key.push('\0');
        self.key.push_str(text);
        if let Some(part) = self.selectors.get(self.key.as_str()) {
            return Some(part.clone());
        }
        let coordinate = scope.coordinates.get(key)?;
        let value: Value = serde_json::from_str(text).ok()?;
        let selector = parse_selector(line, key, &value).ok()?;
        let resolved = select::resolve(line, Some(&selector), coordinate).ok()?;
        let provenance = (key == "time").then(|| {
            let p = Provenance::of(scope, Some(&resolved));
            let key = provenance_key(&p);
            (p, key)
        });
        let part = Rc::new(SelectorPart {
            member: canonical_member(key, &selector.canonical_json()),
            resolved,
            provenance,
        });
        if self.selectors.len() >= MAX_PARTS {
            self.selectors.clear();
        }
        self.selectors
            .insert(self.key.as_str().into(), part.clone());
        Some(part)
    }

    /// The part of `variable` value `text`; `None` when it is not a good list of variables of
    /// `source`.
    fn variables(&mut self, line: usize, text: &str, scope: &Scope) -> Option<Rc<VariablePart>> {
        if let Some(part) = self.variables.get(text) {
            return Some(part.clone());
        }
        let value: Value = serde_json::from_str(text).ok()?;
        let names = parse_variables(line, &value).ok()?;
        let planned = planned_variables(line, &names, scope).ok()?;
        let file_dims = file_dims(&planned);
        let part = Rc::new(VariablePart {
            attributes: attributes_part(scope, &file_dims, &planned),
            file_dims,
            member: canonical_variables(&names),
            names,
            planned,
        });
        if self.variables.len() >= MAX_PARTS {
            self.variables.clear();
        }
        self.variables.insert(text.into(), part.clone());
        Some(part)
    }
}

/// The entry of one line, made of memoized parts; `None` when the line must go the whole
/// way (see the module's invariant).
pub(super) fn entry(
    line: usize,
    text: &str,
    scope: &Scope,
    options: PlanOptions,
    memo: &mut PlanMemo,
) -> Option<Entry> {
    let raw = text.trim();
    let Fields(fields) = serde_json::from_str(raw).ok()?;
    let mut name = None;
    let mut variables = None;
    let mut selectors = Vec::with_capacity(fields.len());
    for (key, value) in fields {
        match key {
            "name" => {
                let value: Value = serde_json::from_str(value.get()).ok()?;
                name = Some(parse_name(line, &value).ok()?);
            }
            "variable" => variables = Some(memo.variables(line, value.get(), scope)?),
            _ => selectors.push((key, memo.selector(line, key, value.get(), scope)?)),
        }
    }
    let variables = variables?;
    let mut selections = BTreeMap::new();
    for (key, part) in &selectors {
        if variables.file_dims.iter().any(|d| d == key) {
            selections.insert(key.to_string(), part.resolved.clone());
        }
    }
    add_whole_axes(line, scope, &variables.file_dims, &mut selections).ok()?;
    let canonical = canonical_of_members(
        selectors
            .iter()
            .map(|(k, part)| (*k, part.member.as_str()))
            .chain([("variable", variables.member.as_str())])
            .collect(),
    );
    // The provenance of the time selected (of no time when the file has no time axis).
    let timed = selectors
        .iter()
        .find(|(k, _)| *k == "time" && selections.contains_key("time"));
    let (provenance, provenance_key) = match timed.and_then(|(_, p)| p.provenance.as_ref()) {
        Some((p, key)) => (p.clone(), key.clone()),
        None => {
            let p = Provenance::of(scope, selections.get("time"));
            let key = provenance_key(&p);
            (p, key)
        }
    };
    let names = Names {
        name: name.as_deref(),
        variables: &variables.names,
    };
    let r = finish(
        line,
        names,
        scope,
        options,
        variables.planned.clone(),
        variables.file_dims.clone(),
        canonical,
        &variables.attributes,
        provenance,
        selections,
        None,
    )
    .ok()?;
    entry_of(line, raw, r, &provenance_key, scope, options, memo).ok()
}

/// The members of one JSON object as written, in order, a repeated key keeping its first
/// place and its last value (as `serde_json::Map` does). Keys must be free of escapes.
struct Fields<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut out: Vec<(&'de str, &'de RawValue)> = Vec::with_capacity(8);
                while let Some(key) = map.next_key::<&'de str>()? {
                    let value: &'de RawValue = map.next_value()?;
                    match out.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = value,
                        None => out.push((key, value)),
                    }
                }
                Ok(Fields(out))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_order_and_the_last_value_of_a_repeated_key() {
        let Fields(f) = serde_json::from_str(r#"{"b": 1, "a": [2, 3], "b": {"x": 4}}"#).unwrap();
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.get())).collect();
        assert_eq!(f, [("b", r#"{"x": 4}"#), ("a", "[2, 3]")]);
    }

    #[test]
    fn fields_refuse_what_is_not_a_plain_object() {
        assert!(serde_json::from_str::<Fields>("[1]").is_err());
        assert!(serde_json::from_str::<Fields>(r#"{"a\u0062": 1}"#).is_err());
        assert!(serde_json::from_str::<Fields>(r#"{"a": 1} x"#).is_err());
    }
}
