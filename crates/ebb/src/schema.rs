//! `ebb schema`: a JSON Schema (draft-07) of the pool file, generated from the key
//! declarations the reader itself checks against: the engine's sections
//! (`ebb_engine::config::keys::SECTIONS`) and the keys each registered balancer driver,
//! transport, check kind and maintenance kind declares. Nothing here is written by hand, so the schema cannot drift from
//! what `ebb check` accepts. Draft-07 because that is what editors' TOML support (Taplo,
//! Even Better TOML) reads best.

use ebb_config::{Key, Kind};
use ebb_engine::Registry;
use serde_json::{json, Map, Value};

/// Where the schema says it comes from.
pub const SCHEMA_ID: &str = "https://github.com/ebb-project/ebb/pool-file.schema.json";

/// Prints the schema.
pub fn main() -> i32 {
    let schema = pool_file_schema(ebb_engine::config::keys::SECTIONS, &ebb_drivers::registry());
    match serde_json::to_string_pretty(&schema) {
        Ok(s) => crate::shell::write_stdout(format!("{s}\n").as_bytes()),
        Err(e) => {
            ebb_out::errln!("ebb schema: cannot encode the schema: {e}");
            1
        }
    }
}

/// The schema of a pool file whose engine sections are `sections` (path → keys, `[]` for
/// arrays of tables) and whose drivers and transports are those of `registry`.
pub fn pool_file_schema(sections: &[(&str, &[Key])], registry: &Registry) -> Value {
    let gen = Gen { sections, registry };
    let mut root = gen.section("");
    let root_obj = root.as_object_mut().expect("a section is an object");
    root_obj.insert(
        "$schema".into(),
        json!("http://json-schema.org/draft-07/schema#"),
    );
    root_obj.insert("$id".into(), json!(SCHEMA_ID));
    root_obj.insert("title".into(), json!("ebb pool file"));
    root_obj.insert(
        "description".into(),
        json!("A pool of members behind a load balancer and the runbook ebb applies to each (docs/pool-file.md)."),
    );
    root
}

struct Gen<'a> {
    sections: &'a [(&'a str, &'a [Key])],
    registry: &'a Registry,
}

impl Gen<'_> {
    fn keys(&self, path: &str) -> Option<Vec<Key>> {
        // A maintenance step's table: its kind's keys.
        if let Some(kind) = path
            .strip_prefix("runbook.step[].")
            .and_then(|k| self.registry.find_maintenance(k))
        {
            return Some(kind.keys());
        }
        // The table of a check kind (`runbook.verify[].http`): the kind's keys.
        if let Some((list, kind)) = path.rsplit_once('.') {
            if ebb_engine::config::keys::CHECK_LISTS.contains(&list) {
                let kind = self.registry.find_check(kind)?;
                return (kind.value() == Kind::Table).then(|| kind.keys());
            }
        }
        let mut keys = self
            .sections
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, k)| k.to_vec())?;
        // A step may name any registered maintenance kind.
        if path == "runbook.step[]" {
            keys.extend(self.registry.maintenance_keys());
        }
        // A check takes the key of every check kind.
        if ebb_engine::config::keys::CHECK_LISTS.contains(&path) {
            for c in self.registry.checks() {
                keys.push(Key::new(c.name(), c.value(), c.description()));
            }
        }
        // Members (and their defaults) take the settings of every transport.
        if path == "member[]" || path == "defaults" {
            for t in self.registry.transports() {
                for k in t.keys() {
                    if !keys.iter().any(|have| have.name == k.name) {
                        keys.push(k);
                    }
                }
            }
        }
        Some(keys)
    }

    /// The object schema of section `path`.
    fn section(&self, path: &str) -> Value {
        if path == "balancer" {
            return self.balancer();
        }
        let keys = self.keys(path).unwrap_or_default();
        self.object(path, &keys)
    }

    fn object(&self, path: &str, keys: &[Key]) -> Value {
        let mut props = Map::new();
        for k in keys {
            props.insert(k.name.to_string(), self.key(path, k));
        }
        let required: Vec<&str> = keys.iter().filter(|k| k.required).map(|k| k.name).collect();
        let mut o = json!({
            "type": "object",
            "properties": props,
            "additionalProperties": false,
        });
        if !required.is_empty() {
            o["required"] = json!(required);
        }
        o
    }

    fn key(&self, parent: &str, k: &Key) -> Value {
        let child = if parent.is_empty() {
            k.name.to_string()
        } else {
            format!("{parent}.{}", k.name)
        };
        let mut v = match k.kind {
            Kind::String => json!({"type": "string"}),
            Kind::OneOf(options) => json!({"type": "string", "enum": options}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::Integer => json!({"type": "integer", "minimum": 0}),
            Kind::Number => json!({"type": "number"}),
            Kind::Duration => json!({
                "type": "string",
                "pattern": DURATION,
                "not": {"pattern": ZERO_DURATION},
            }),
            Kind::DurationOrZero => json!({"type": "string", "pattern": DURATION}),
            Kind::Strings => json!({"type": "array", "items": {"type": "string"}}),
            Kind::StringMap => {
                json!({"type": "object", "additionalProperties": {"type": "string"}})
            }
            Kind::Table => {
                if child == "balancer" || self.keys(&child).is_some() {
                    self.section(&child)
                } else {
                    json!({"type": "object"})
                }
            }
            Kind::Tables => {
                let item = format!("{child}[]");
                let items = if self.keys(&item).is_some() {
                    self.section(&item)
                } else {
                    json!({"type": "object"})
                };
                json!({"type": "array", "items": items})
            }
            Kind::Any => json!({}),
        };
        v["description"] = json!(describe(k));
        v
    }

    /// `[balancer]`: one alternative per registered driver, each with exactly that
    /// driver's keys (so a key of another driver is reported as unknown).
    fn balancer(&self) -> Value {
        let base = self.keys("balancer").unwrap_or_default();
        let names: Vec<&str> = self.registry.balancers().iter().map(|b| b.name()).collect();
        let driver_description = base
            .iter()
            .find(|k| k.name == "driver")
            .map(describe)
            .unwrap_or_default();
        let alternatives: Vec<Value> = self
            .registry
            .balancers()
            .iter()
            .map(|b| {
                let mut keys: Vec<Key> = base.clone();
                keys.extend(b.keys());
                let mut o = self.object("balancer", &keys);
                o["properties"]["driver"] = json!({
                    "const": b.name(),
                    "description": driver_description,
                });
                o["title"] = json!(format!("driver = \"{}\"", b.name()));
                o
            })
            .collect();
        json!({
            "type": "object",
            "properties": {"driver": {
                "type": "string",
                "enum": names,
                "description": driver_description,
            }},
            "required": ["driver"],
            "oneOf": alternatives,
        })
    }
}

/// A key's description, saying when it is required.
fn describe(k: &Key) -> String {
    if k.required {
        format!("{} (required)", k.description)
    } else {
        k.description.to_string()
    }
}

/// ebb's duration grammar (`ebb_config::parse_duration`): whole numbers with units,
/// compounded (`"500ms"`, `"1m30s"`, `"1d"`).
const DURATION: &str = r"^\s*([0-9]+(ms|s|m|h|d))+\s*$";
/// A duration that adds up to zero.
const ZERO_DURATION: &str = r"^\s*(0+(ms|s|m|h|d))+\s*$";
