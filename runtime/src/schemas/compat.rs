//! Whether a new version of an event type's schema may replace the previous one.
//!
//! Mode `backward` (the default) asks two things of the new version, so neither side of a
//! stream breaks when it is put:
//! - every event valid under the previous version stays valid (producers already sending them
//!   are not refused): no narrowed `type`, no new `required` field, no narrowed `enum` or
//!   `const`, no tighter bound (`minimum`, `maxLength`, `minItems`, …), no new `pattern`, no
//!   content model closed (`additionalProperties: false`) or a field removed from a closed one;
//! - every field the previous version required stays required (consumers rely on it).
//!
//! The check walks `properties` and `items` recursively and compares the keywords it knows;
//! any other keyword added or changed (`anyOf`, `$ref`, `$defs`, `patternProperties`,
//! `additionalProperties` as a schema, tuple `items`, …) is reported as a change it cannot prove
//! safe, so nothing it does not understand passes. Annotations (`title`, `description`, …)
//! never matter. Mode `none` checks nothing. Pure, and tested without Redis.

use serde_json::{Map, Value};

/// One way a new schema breaks the previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// Where, as a path of field names (`/items/sku`), `/` for the top.
    pub path: String,
    /// What breaks, for a person.
    pub what: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.what)
    }
}

/// What in `new` breaks events or consumers of `old` (empty: compatible).
pub fn backward(old: &Value, new: &Value) -> Vec<Break> {
    let mut out = Vec::new();
    compare(old, new, "", &mut out);
    out
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    }
}

/// The JSON types a schema's `type` allows (`None`: any).
fn types(schema: &Map<String, Value>) -> Option<Vec<String>> {
    match schema.get("type")? {
        Value::String(t) => Some(vec![t.clone()]),
        Value::Array(ts) => Some(
            ts.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

fn allows_type(allowed: &[String], t: &str) -> bool {
    allowed
        .iter()
        .any(|a| a == t || (a == "number" && t == "integer"))
}

fn required(schema: &Map<String, Value>) -> Vec<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn closed(schema: &Map<String, Value>) -> bool {
    schema.get("additionalProperties") == Some(&Value::Bool(false))
}

/// Keywords [`compare`] checks itself.
const HANDLED: &[&str] = &[
    "type",
    "required",
    "enum",
    "const",
    "minimum",
    "exclusiveMinimum",
    "minLength",
    "minItems",
    "minProperties",
    "maximum",
    "exclusiveMaximum",
    "maxLength",
    "maxItems",
    "maxProperties",
    "pattern",
    "format",
    "multipleOf",
    "uniqueItems",
    "properties",
];

/// Keywords that never change what is valid.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "examples",
    "default",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
];

fn compare(old: &Value, new: &Value, path: &str, out: &mut Vec<Break>) {
    let mut broke = |what: String| {
        out.push(Break {
            path: at(path),
            what,
        })
    };
    let (old, new) = match (old, new) {
        (_, Value::Bool(true)) => return,
        (Value::Bool(false), _) => return,
        (Value::Object(old), Value::Object(new)) => (old, new),
        (_, Value::Bool(false)) => {
            broke("the new schema refuses every value here".to_owned());
            return;
        }
        (Value::Bool(true), Value::Object(new)) => {
            if new.keys().any(|k| !ANNOTATIONS.contains(&k.as_str())) {
                broke("a constraint was added where any value was allowed".to_owned());
            }
            return;
        }
        _ => return,
    };

    match (types(old), types(new)) {
        (_, None) => {}
        (None, Some(new_types)) => broke(format!(
            "type narrowed from any to {}",
            new_types.join(" or ")
        )),
        (Some(old_types), Some(new_types)) => {
            let lost: Vec<&String> = old_types
                .iter()
                .filter(|t| !allows_type(&new_types, t))
                .collect();
            if !lost.is_empty() {
                broke(format!(
                    "type narrowed from {} to {} (values of type {} were valid)",
                    old_types.join(" or "),
                    new_types.join(" or "),
                    lost.iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }

    let (old_required, new_required) = (required(old), required(new));
    for name in new_required.iter().filter(|n| !old_required.contains(n)) {
        broke(format!(
            "new required field {name:?}: events without it were valid and would be refused"
        ));
    }
    for name in old_required.iter().filter(|n| !new_required.contains(n)) {
        broke(format!(
            "field {name:?} is no longer required: consumers that rely on it would get events \
             without it"
        ));
    }

    for keyword in ["enum", "const"] {
        match (old.get(keyword), new.get(keyword)) {
            (_, None) => {}
            (None, Some(_)) => broke(format!("`{keyword}` added: other values were valid")),
            (Some(o), Some(n)) if keyword == "enum" => {
                let (o, n) = (
                    o.as_array().cloned().unwrap_or_default(),
                    n.as_array().cloned().unwrap_or_default(),
                );
                let lost: Vec<String> = o
                    .iter()
                    .filter(|v| !n.contains(v))
                    .map(Value::to_string)
                    .collect();
                if !lost.is_empty() {
                    broke(format!("`enum` lost {}", lost.join(", ")));
                }
            }
            (Some(o), Some(n)) => {
                if o != n {
                    broke(format!("`const` changed from {o} to {n}"));
                }
            }
        }
    }

    // Lower bounds must not rise, upper bounds must not fall.
    for (keyword, lower) in [
        ("minimum", true),
        ("exclusiveMinimum", true),
        ("minLength", true),
        ("minItems", true),
        ("minProperties", true),
        ("maximum", false),
        ("exclusiveMaximum", false),
        ("maxLength", false),
        ("maxItems", false),
        ("maxProperties", false),
    ] {
        let Some(n) = new.get(keyword).and_then(Value::as_f64) else {
            continue;
        };
        match old.get(keyword).and_then(Value::as_f64) {
            None => broke(format!("`{keyword}` {n} added")),
            Some(o) if (lower && n > o) || (!lower && n < o) => {
                broke(format!("`{keyword}` tightened from {o} to {n}"))
            }
            Some(_) => {}
        }
    }
    for keyword in ["pattern", "format"] {
        if let Some(n) = new.get(keyword)
            && old.get(keyword) != Some(n)
        {
            broke(format!("`{keyword}` {n} added or changed"));
        }
    }
    if let Some(n) = new.get("multipleOf").and_then(Value::as_f64) {
        // Still fine if every old multiple is a new one: the old divisor a multiple of the new.
        let fine = old
            .get("multipleOf")
            .and_then(Value::as_f64)
            .is_some_and(|o| n > 0.0 && (o / n).fract() == 0.0);
        if !fine {
            broke(format!("`multipleOf` {n} added or changed"));
        }
    }
    if new.get("uniqueItems") == Some(&Value::Bool(true))
        && old.get("uniqueItems") != Some(&Value::Bool(true))
    {
        broke("`uniqueItems` added".to_owned());
    }
    // Whatever else changed, this check does not understand: it cannot pass as safe.
    let object_or_bool = |v: Option<&Value>| v.is_none_or(|v| v.is_object() || v.is_boolean());
    for (keyword, value) in new {
        let handled = HANDLED.contains(&keyword.as_str())
            || ANNOTATIONS.contains(&keyword.as_str())
            || (keyword == "items"
                && object_or_bool(old.get("items"))
                && (value.is_object() || value.is_boolean()))
            || (keyword == "additionalProperties" && value.is_boolean());
        if !handled && old.get(keyword) != Some(value) {
            broke(format!(
                "`{keyword}` added or changed: Eddy cannot prove the change safe (use \
                 compatibility \"none\" to put it anyway)"
            ));
        }
    }

    if closed(new) && !closed(old) {
        broke("closed to fields it does not name (`additionalProperties: false`)".to_owned());
    }
    let empty = Map::new();
    let old_props = old
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let new_props = new
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (name, old_prop) in old_props {
        let child = format!("{path}/{name}");
        match new_props.get(name) {
            Some(new_prop) => compare(old_prop, new_prop, &child, out),
            None if closed(new) => out.push(Break {
                path: child,
                what: "field removed while the schema is closed (`additionalProperties: false`)"
                    .to_owned(),
            }),
            None => {}
        }
    }
    if let (Some(old_items), Some(new_items)) = (old.get("items"), new.get("items")) {
        compare(old_items, new_items, &format!("{path}/items"), out);
    } else if let (None, Some(new_items)) = (old.get("items"), new.get("items")) {
        compare(&Value::Bool(true), new_items, &format!("{path}/items"), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order() -> Value {
        json!({
            "type": "object",
            "required": ["orderId"],
            "properties": {
                "orderId": {"type": "string"},
                "total": {"type": "number", "minimum": 0},
                "items": {"type": "array", "items": {"type": "object",
                    "properties": {"sku": {"type": "string"}}}}
            }
        })
    }

    fn whats(old: Value, new: Value) -> Vec<String> {
        backward(&old, &new)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn adding_an_optional_field_or_widening_is_compatible() {
        let mut new = order();
        new["properties"]["note"] = json!({"type": "string"});
        new["properties"]["total"] = json!({"type": ["number", "null"]});
        new["properties"]["total"]["minimum"] = json!(-10);
        assert_eq!(whats(order(), new), Vec::<String>::new());
        assert!(backward(&order(), &order()).is_empty());
    }

    #[test]
    fn each_breaking_change_is_named_with_its_path() {
        let mut new = order();
        new["required"] = json!(["orderId", "userId"]);
        assert_eq!(
            whats(order(), new),
            vec![
                "/: new required field \"userId\": events without it were valid and would be \
                 refused"
            ]
        );

        let mut new = order();
        new["required"] = json!([]);
        assert!(whats(order(), new)[0].contains("no longer required"));

        let mut new = order();
        new["properties"]["total"]["type"] = json!("integer");
        assert_eq!(
            whats(order(), new),
            vec!["/total: type narrowed from number to integer (values of type number were valid)"]
        );

        let mut new = order();
        new["properties"]["total"]["minimum"] = json!(1);
        assert_eq!(
            whats(order(), new),
            vec!["/total: `minimum` tightened from 0 to 1"]
        );

        let mut new = order();
        new["properties"]["items"]["items"]["properties"]["sku"]["type"] = json!("integer");
        assert!(whats(order(), new)[0].starts_with("/items/items/sku: type narrowed"));

        let mut new = order();
        new["additionalProperties"] = json!(false);
        new["properties"].as_object_mut().unwrap().remove("total");
        let found = whats(order(), new);
        assert!(
            found.iter().any(|w| w.contains("closed to fields")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|w| w.starts_with("/total: field removed")),
            "{found:?}"
        );

        let old = json!({"enum": ["a", "b"]});
        assert_eq!(
            whats(old, json!({"enum": ["a"]})),
            vec!["/: `enum` lost \"b\""]
        );
        assert!(
            whats(json!({}), json!({"anyOf": [{"type": "string"}]}))[0].contains("cannot prove")
        );
        // What the check does not understand never passes as safe.
        for added in [
            json!({"additionalProperties": {"type": "string"}}),
            json!({"patternProperties": {"^x": {"type": "string"}}}),
            json!({"$defs": {"a": {"type": "string"}}}),
            json!({"items": [{"type": "string"}]}),
            json!({"propertyNames": {"maxLength": 3}}),
        ] {
            assert!(
                whats(json!({}), added.clone())[0].contains("cannot prove"),
                "{added}"
            );
        }
        // Annotations and widenings are not breaks.
        assert!(
            whats(
                json!({"properties": {"a": true}}),
                json!({"properties": {"a": {"description": "x"}}})
            )
            .is_empty()
        );
        assert!(whats(json!({"multipleOf": 4}), json!({"multipleOf": 2})).is_empty());
        assert!(whats(json!({}), json!({"uniqueItems": false})).is_empty());
        assert!(!whats(json!({"multipleOf": 2}), json!({"multipleOf": 4})).is_empty());
    }
}
