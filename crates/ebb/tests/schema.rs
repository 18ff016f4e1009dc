//! `ebb schema` against a standard JSON Schema validator (Python's `jsonschema`, Debian
//! package python3-jsonschema): every pool file in examples/ validates, a wrong type and
//! an unknown key are rejected; and every key the schema describes has a description.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const VALIDATE: &str = r#"
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft7Validator.check_schema(schema)
v = jsonschema.Draft7Validator(schema)
out = {}
for path in sys.argv[2:]:
    doc = json.load(open(path))
    errs = []
    for e in v.iter_errors(doc):
        # The deepest reasons, so a oneOf names the key that is wrong.
        leaves = [c for c in e.context] or [e]
        errs.append({"path": "/".join(str(p) for p in e.absolute_path),
                     "message": e.message,
                     "reasons": sorted({c.message for c in leaves})})
    out[path] = errs
print(json.dumps(out))
"#;

fn schema(dir: &Path) -> (PathBuf, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .arg("schema")
        .output()
        .expect("run ebb schema");
    assert!(
        out.status.success(),
        "ebb schema: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("the schema is JSON");
    let path = dir.join("pool-file.schema.json");
    std::fs::write(&path, &out.stdout).expect("write schema");
    (path, v)
}

/// The TOML file as the JSON document a validator sees (what Taplo does too).
fn as_json(dir: &Path, name: &str, toml_text: &str) -> PathBuf {
    let v: toml::Value = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(&v).expect("to JSON")).expect("write");
    path
}

/// `file -> errors` from the validator.
fn validate(schema: &Path, docs: &[PathBuf]) -> serde_json::Map<String, Value> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(VALIDATE)
        .arg(schema)
        .args(docs)
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "the validator failed (python3-jsonschema installed? scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("validator output") {
        Value::Object(m) => m,
        other => panic!("validator printed {other}"),
    }
}

fn examples() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut found = Vec::new();
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read examples").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                found.push(p);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_example_validates_and_mistakes_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (schema_path, _) = schema(dir.path());
    let examples = examples();
    assert!(examples.len() >= 3, "examples: {examples:?}");
    let mut docs = Vec::new();
    let mut texts = Vec::new();
    for (i, p) in examples.iter().enumerate() {
        let text = std::fs::read_to_string(p).expect("read example");
        docs.push(as_json(dir.path(), &format!("example{i}"), &text));
        texts.push(text);
    }
    // The local-command example with a wrong type and with an unknown key.
    let local = texts
        .iter()
        .find(|t| t.contains("driver = \"command\""))
        .expect("the local-command example");
    let wrong_type = local.replace("min_in_service = 2", "min_in_service = \"two\"");
    assert_ne!(&wrong_type, local);
    let unknown_key = local.replace("capacity_wait = \"30s\"", "capacity_wiat = \"30s\"");
    assert_ne!(&unknown_key, local);
    let unknown_driver_key = local.replace(
        "driver = \"command\"",
        "driver = \"command\"\nbackend = \"web\"",
    );
    let bad_duration = local.replace("timeout = \"2m\"", "timeout = \"2 minutes\"");
    assert_ne!(&bad_duration, local);
    // Maintenance windows: the table is in the schema, a window validates, a typo in one
    // does not.
    let windowed = local.replace(
        "capacity_wait = \"30s\"",
        "capacity_wait = \"30s\"\n\n[[pool.window]]\ndays = [\"sat\", \"sun\"]\nstart = \"22:00\"\nlength = \"4h\"\ntime_zone = \"Europe/Berlin\"\n",
    );
    assert_ne!(&windowed, local);
    let window_typo = windowed.replace("length = \"4h\"", "lenght = \"4h\"");
    let good_window = as_json(dir.path(), "windowed", &windowed);
    let wrong = [
        as_json(dir.path(), "window_typo", &window_typo),
        as_json(dir.path(), "wrong_type", &wrong_type),
        as_json(dir.path(), "unknown_key", &unknown_key),
        as_json(dir.path(), "unknown_driver_key", &unknown_driver_key),
        as_json(dir.path(), "bad_duration", &bad_duration),
    ];
    docs.extend(wrong.iter().cloned());
    docs.push(good_window.clone());

    let result = validate(&schema_path, &docs);
    for (p, doc) in examples.iter().zip(&docs) {
        let errs = &result[doc.to_str().expect("utf-8")];
        assert_eq!(
            errs,
            &Value::Array(vec![]),
            "{} does not validate",
            p.display()
        );
    }
    let errors = |doc: &PathBuf| result[doc.to_str().expect("utf-8")].to_string();
    let e = errors(&wrong[0]);
    assert!(e.contains("lenght"), "{e}");
    let e = errors(&wrong[1]);
    assert!(
        e.contains("pool") && e.contains("'two' is not of type 'integer'"),
        "{e}"
    );
    let e = errors(&wrong[2]);
    assert!(e.contains("capacity_wiat"), "{e}");
    let e = errors(&wrong[3]);
    assert!(e.contains("balancer") && e.contains("backend"), "{e}");
    let e = errors(&wrong[4]);
    assert!(e.contains("2 minutes"), "{e}");
    assert_eq!(errors(&good_window), "[]", "a pool with a window");

    // Each example also passes ebb's own reader: the schema and the reader agree there.
    for p in &examples {
        ebb_engine::config::load(p, &ebb_drivers::registry())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

/// Every property of the schema, with the path to it.
fn properties<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    if let Some(props) = v.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            let here = format!("{path}.{k}");
            out.push((here.clone(), p));
            properties(p, here, out);
        }
    }
    if let Some(items) = v.get("items") {
        properties(items, format!("{path}[]"), out);
    }
    for alt in ["oneOf", "anyOf", "allOf"] {
        for a in v.get(alt).and_then(Value::as_array).into_iter().flatten() {
            properties(a, path.clone(), out);
        }
    }
}

#[test]
fn every_key_has_a_description_and_is_documented() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, schema) = schema(dir.path());
    let docs_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    // Every doc: the pool file reference and the driver pages it links for their keys.
    let mut docs = String::new();
    for e in std::fs::read_dir(&docs_dir).expect("docs/").flatten() {
        if e.path().extension().is_some_and(|x| x == "md") {
            docs += &std::fs::read_to_string(e.path()).expect("read doc");
        }
    }
    let mut props = Vec::new();
    properties(&schema, String::new(), &mut props);
    assert!(props.len() > 60, "only {} keys described", props.len());
    for (path, p) in &props {
        let d = p.get("description").and_then(Value::as_str).unwrap_or("");
        assert!(!d.trim().is_empty(), "{path} has no description");
        let key = path.rsplit('.').next().unwrap_or("").trim_end_matches("[]");
        assert!(
            docs.contains(&format!("`{key}`"))
                || docs.contains(&format!("{key} ="))
                || docs.contains(&format!("[{key}]"))
                || docs.contains(&format!(".{key}]")),
            "{path}: `{key}` is not in docs/"
        );
    }
    // Every driver is an alternative of [balancer].
    let drivers: Vec<&str> = schema["properties"]["balancer"]["properties"]["driver"]["enum"]
        .as_array()
        .expect("driver enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for d in ["builtin", "haproxy", "nginx", "caddy", "nlb", "command"] {
        assert!(drivers.contains(&d), "driver {d} missing from {drivers:?}");
    }
}

/// Taplo (the TOML toolkit behind Even Better TOML; npm package @taplo/cli) follows the
/// `#:schema` directive docs/pool-file.md shows: the example passes, mistakes are
/// reported with their lines.
#[test]
fn taplo_follows_the_schema_directive() {
    let dir = tempfile::tempdir().expect("tempdir");
    schema(dir.path());
    let local = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/local-command/pool.toml"),
    )
    .expect("example");
    let good = format!("#:schema ./pool-file.schema.json\n{local}");
    let bad = good
        .replace("min_in_service = 2", "min_in_service = \"two\"")
        .replace("capacity_wait = \"30s\"", "capacity_wiat = \"30s\"");
    std::fs::write(dir.path().join("good.toml"), &good).expect("write");
    std::fs::write(dir.path().join("bad.toml"), &bad).expect("write");
    // Both at once: taplo (node and WebAssembly) takes seconds to start.
    let taplo = |file: &str| {
        Command::new("taplo")
            .args(["check", "--no-auto-config", file])
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("taplo is installed (npm install -g @taplo/cli; scripts/test.sh does it)")
    };
    let (ok, bad) = (taplo("good.toml"), taplo("bad.toml"));
    let ok = ok.wait_with_output().expect("taplo");
    let bad = bad.wait_with_output().expect("taplo");
    assert!(
        ok.status.success(),
        "taplo rejects the example: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "taplo accepted mistakes: {said}");
    assert!(
        said.contains("\"two\" is not of type \"integer\""),
        "{said}"
    );
    assert!(said.contains("capacity_wiat"), "{said}");
    assert!(
        said.contains("bad.toml:10:") || said.contains("bad.toml:11:"),
        "{said}"
    );
}

#[test]
fn bake_and_rollback_are_in_the_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (schema_path, _) = schema(dir.path());
    let local = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/local-command/pool.toml"),
    )
    .expect("example");
    let good = local.replace(
        "[runbook.drain]",
        r#"[runbook.bake]
duration = "10m"
interval = "30s"

[[runbook.bake.check]]
name = "errors"
http = { url = "http://{address}/health", expect_status = 200 }

[[runbook.rollback]]
name = "downgrade"
run = "echo 1.0 > state/{member}.version"
timeout = "5m"
reboot = "never"

[runbook.drain]"#,
    );
    let good = good.replace(
        "[runbook]\n",
        "[runbook]\nrollback_on = [\"verify\", \"bake\"]\n",
    );
    assert!(good.contains("rollback_on"));
    let bad = good
        .replace("interval = \"30s\"", "interval = \"30s\"\nrounds = 3")
        .replace("reboot = \"never\"", "reboot = \"never\"\nundo = \"x\"");
    let docs = [
        as_json(dir.path(), "bake", &good),
        as_json(dir.path(), "bake_bad", &bad),
    ];
    let result = validate(&schema_path, &docs);
    let errors = |doc: &PathBuf| result[doc.to_str().expect("utf-8")].to_string();
    assert_eq!(errors(&docs[0]), "[]");
    let e = errors(&docs[1]);
    assert!(e.contains("rounds") && e.contains("undo"), "{e}");
    // ebb's own reader agrees.
    let path = dir.path().join("pool.toml");
    std::fs::write(&path, &good).expect("write");
    ebb_engine::config::load(&path, &ebb_drivers::registry()).unwrap_or_else(|e| panic!("{e}"));
}
