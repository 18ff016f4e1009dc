//! The pool file the demo writes: the same TOML contract a user writes for a real array,
//! read by both `ebb lb serve` and `ebb run`.

use std::path::Path;

/// Everything that varies from one demo to the next.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    /// Address clients use (the balancer's listener), `127.0.0.1:PORT`.
    pub listen: String,
    /// The balancer's control API address, `127.0.0.1:PORT`.
    pub control: String,
    /// Members as (name, address).
    pub members: Vec<(String, String)>,
    /// drainstop or stop.
    pub drain_mode: String,
    /// The `ebb` binary the steps run.
    pub exe: String,
    /// The demo's working directory (absolute).
    pub dir: String,
    /// The version the rollout installs.
    pub new_version: String,
}

/// Renders the pool file.
pub fn render(spec: &PoolSpec) -> String {
    let q = quote;
    let min_in_service = spec.members.len().saturating_sub(1);
    let mut out = String::new();
    out.push_str(
        "# Written by `ebb demo`: a pool of demo members behind ebb's built-in balancer.\n",
    );
    out.push_str(&format!(
        "[pool]\nname = \"demo\"\nmax_unavailable = 1\nmin_in_service = {min_in_service}\ncapacity_wait = \"30s\"\n\n"
    ));
    out.push_str(&format!(
        "[balancer]\ndriver = \"builtin\"\nlisten = {}\ncontrol = {}\nstate_file = \"lb-state.json\"\nbalance = \"least-connections\"\n\n",
        q(&spec.listen),
        q(&format!("http://{}", spec.control)),
    ));
    out.push_str(
        "[balancer.health]\nkind = \"http\"\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\n\n",
    );
    out.push_str(&format!(
        "[defaults]\ntransport = \"local\"\nboot_id = \"cat {{var.dir}}/boot/{{member}}\"\nvars = {{ ebb = {}, dir = {} }}\n\n",
        q(&spec.exe),
        q(&spec.dir),
    ));
    for (name, address) in &spec.members {
        out.push_str(&format!(
            "[[member]]\nname = {}\naddress = {}\n\n",
            q(name),
            q(address)
        ));
    }
    out.push_str(&format!(
        "[runbook.drain]\nmode = {}\ntimeout = \"30s\"\non_timeout = \"stop\"\nhold = true\n\n",
        q(&spec.drain_mode)
    ));
    out.push_str(
        "[[runbook.step]]\nname = \"maintenance\"\nrun = \"{var.ebb} demo-ctl --dir {var.dir} maintenance-on {member}\"\nundo = \"{var.ebb} demo-ctl --dir {var.dir} maintenance-off {member}\"\n\n",
    );
    out.push_str(&format!(
        "[[runbook.step]]\nname = {}\nrun = {}\ntimeout = \"60s\"\nreboot = \"always\"\n\n",
        q(&format!("install {}", spec.new_version)),
        q(&format!(
            "{{var.ebb}} demo-ctl --dir {{var.dir}} install {{member}} --version {}",
            spec.new_version
        )),
    ));
    out.push_str(
        "[runbook.reboot]\ncommand = \"{var.ebb} demo-ctl --dir {var.dir} reboot {member}\"\ntimeout = \"60s\"\n\n",
    );
    out.push_str(&format!(
        "[[runbook.verify]]\nname = \"version\"\nhttp = {{ url = \"http://{{address}}/version\", expect_status = 200, expect_body = {} }}\nretries = 10\ninterval = \"500ms\"\n",
        q(&spec.new_version)
    ));
    out
}

/// Writes the pool file to `path`.
pub fn write(path: &Path, spec: &PoolSpec) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::write(path, render(spec)).with_context(|| format!("cannot write {}", path.display()))
}

/// A TOML basic string (JSON string escapes are valid TOML escapes).
fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_parseable_toml_with_the_contract_keys() {
        let spec = PoolSpec {
            listen: "127.0.0.1:1000".into(),
            control: "127.0.0.1:1001".into(),
            members: vec![
                ("web1".into(), "127.0.0.1:1002".into()),
                ("web2".into(), "127.0.0.1:1003".into()),
            ],
            drain_mode: "stop".into(),
            exe: "/opt/e b/ebb".into(),
            dir: "/tmp/x \"y\"".into(),
            new_version: "1.1".into(),
        };
        let text = render(&spec);
        let value: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(value["pool"]["min_in_service"].as_integer(), Some(1));
        assert_eq!(value["runbook"]["drain"]["mode"].as_str(), Some("stop"));
        assert_eq!(
            value["balancer"]["control"].as_str(),
            Some("http://127.0.0.1:1001")
        );
        assert_eq!(
            value["defaults"]["vars"]["dir"].as_str(),
            Some("/tmp/x \"y\"")
        );
        assert_eq!(value["member"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            value["runbook"]["verify"][0]["http"]["expect_body"].as_str(),
            Some("1.1")
        );
    }
}
