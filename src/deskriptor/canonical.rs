//! The canonical form of a deskriptor: the selection without `name`, keys sorted, a single
//! variable as a list, integral numbers without a fraction.
//!
//! Input: a parsed [`Deskriptor`] (or, for the plan's memo, its members one by one). Output:
//! the JSON text written into every file and hashed into its identity. Invariant: two lines
//! that select the same thing (different spacing, key order, number spelling or name) have one
//! canonical form, and it is the object `serde_json` writes.

use serde_json::{Map, Value};

use super::representation::{canonical_points, canonical_resample};
use super::{number_json, Deskriptor, Label, Selector};

impl Label {
    fn to_json(&self) -> Value {
        match self {
            Label::Number(x) => number_json(*x),
            Label::Text(s) => Value::String(s.clone()),
        }
    }
}

impl Selector {
    /// The selector's part of the canonical form ([`Deskriptor::canonical_json`]).
    pub fn canonical_json(&self) -> String {
        self.to_json().to_string()
    }

    fn to_json(&self) -> Value {
        match self {
            Selector::Range { start, end, step } => {
                let mut m = Map::new();
                if let Some(e) = end {
                    m.insert("end".into(), e.to_json());
                }
                if let Some(s) = start {
                    m.insert("start".into(), s.to_json());
                }
                if *step != 1 {
                    m.insert("step".into(), Value::from(*step));
                }
                Value::Object(m)
            }
            Selector::One(l) => l.to_json(),
            Selector::List(ls) => Value::Array(ls.iter().map(Label::to_json).collect()),
        }
    }
}

/// One member of the canonical form: `"key":value`.
pub(crate) fn canonical_member(key: &str, value: &str) -> String {
    let mut member = serde_json::to_string(key).expect("strings serialize");
    member.push(':');
    member.push_str(value);
    member
}

/// The `variable` member of the canonical form.
pub(crate) fn canonical_variables(variables: &[String]) -> String {
    canonical_member(
        "variable",
        &serde_json::to_string(variables).expect("strings serialize"),
    )
}

/// The canonical form of its members (`(key, "key":value)`, `variable` among them) in any
/// order.
pub(crate) fn canonical_of_members(mut members: Vec<(&str, &str)>) -> String {
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let len = members.iter().map(|(_, m)| m.len() + 1).sum::<usize>() + 1;
    let mut out = String::with_capacity(len);
    out.push('{');
    for (i, (_, member)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(member);
    }
    out.push('}');
    out
}

impl Deskriptor {
    /// The canonical JSON of the selection (without `name`): keys sorted, variables as a list,
    /// integral numbers without a fraction. It is written into every file and hashed into the
    /// file's identity.
    pub fn canonical_json(&self) -> String {
        let mut members: Vec<(&str, String)> = self
            .selectors
            .iter()
            .map(|(k, s)| (k.as_str(), canonical_member(k, &s.canonical_json())))
            .collect();
        if let Some(r) = &self.resample {
            members.push((
                "resample",
                canonical_member("resample", &canonical_resample(r)),
            ));
        }
        if let Some(p) = &self.points {
            members.push(("points", canonical_member("points", &canonical_points(p))));
        }
        let variables = canonical_variables(&self.variables);
        canonical_of_members(
            members
                .iter()
                .map(|(k, m)| (*k, m.as_str()))
                .chain([("variable", variables.as_str())])
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deskriptor::tests::PROTOTYPE;
    use std::collections::BTreeMap;

    #[test]
    fn canonical_json_ignores_spacing_order_name_and_number_spelling() {
        let a = Deskriptor::parse(1, PROTOTYPE).unwrap();
        let b = Deskriptor::parse(
            2,
            r#"{"name":"x","variable":"2m_temperature","longitude":{"end":9.0,"start":8},
            "latitude":{"end":47,"start":48.0,"step":1},"time":{"end":"2023-01-01T11:59","start":"2023-01-01T11:00"}}"#
                .replace('\n', " ")
                .as_str(),
        )
        .unwrap();
        assert_eq!(a.canonical_json(), b.canonical_json());
        assert_eq!(
            a.canonical_json(),
            r#"{"latitude":{"end":47,"start":48},"longitude":{"end":9,"start":8},"time":{"end":"2023-01-01T11:59","start":"2023-01-01T11:00"},"variable":["2m_temperature"]}"#
        );
    }

    /// The canonical form made of parts is the one `serde_json` writes for the whole object
    /// (what identities were hashed from before it was made of parts).
    #[test]
    fn canonical_json_is_serde_jsons_object() {
        let lines = [
            PROTOTYPE.to_string(),
            r#"{"variable":["a\"b","c\u00e9\n"],"time":["2023-01-01T00:00","2023-01-02"],"level":[500,850.5,-0.0]}"#.into(),
            r#"{"variable":"t","latitude":{"start":null,"end":-90,"step":3},"longitude":1e3}"#.into(),
            r#"{"variable":"t","time":{"start":"2023-01-01","end":null},"level":1.25e-7}"#.into(),
        ];
        for line in lines {
            let d = Deskriptor::parse(1, &line).unwrap();
            let mut m = BTreeMap::new();
            for (k, s) in &d.selectors {
                m.insert(k.clone(), s.to_json());
            }
            m.insert("variable".to_string(), serde_json::json!(d.variables));
            let whole = Value::Object(m.into_iter().collect::<Map<String, Value>>()).to_string();
            assert_eq!(d.canonical_json(), whole, "{line}");
        }
    }
}
