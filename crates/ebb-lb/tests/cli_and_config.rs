//! Config errors name file, line and key; `ebb lb` commands exit 0/1/2 as documented.
mod support;

use ebb_lb::cli::{run, ControlArgs, LbCommand};
use ebb_lb::{HostState, LbConfig};
use support::*;

const BAD: &str = r#"[pool]
name = "web"

[balancer]
driver = "builtin"
listen = "127.0.0.1:8080"
balance = "rr"
affinity = "cookie"
connect_timeout = "2 seconds"
colour = "blue"

[balancer.health]
kind = "icmp"
rise = 0

[[member]]
name = "web1"
address = "127.0.0.1:8081"

[[member]]
name = "web1"
address = "127.0.0.1"
weight = "heavy"
"#;

#[test]
fn config_errors_name_file_line_and_key_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.toml");
    std::fs::write(&path, BAD).unwrap();
    let errs = LbConfig::from_pool_file(&path).unwrap_err();
    let text = errs.to_string();
    let file = path.display().to_string();
    for want in [
        format!("{file}:7: balancer.balance: expected \"round-robin\" or \"least-connections\", found \"rr\""),
        format!("{file}:8: balancer.affinity: expected \"none\" or \"source-ip\", found \"cookie\""),
        format!("{file}:9: balancer.connect_timeout: expected a duration"),
        format!("{file}:10: balancer.colour: unknown key"),
        format!("{file}:13: balancer.health.kind: expected \"tcp\" or \"http\", found \"icmp\""),
        format!("{file}:14: balancer.health.rise: expected an integer from 1 to 100, found 0"),
        format!("{file}:21: member[1].name: the balancer name \"web1\" is used by an earlier member"),
        format!("{file}:22: member[1].address: expected \"HOST:PORT\""),
        format!("{file}:23: member[1].weight: expected an integer, found the string \"heavy\""),
    ] {
        assert!(text.contains(&want), "missing\n  {want}\nin\n{text}");
    }
    assert_eq!(errs.0.len(), 9, "{text}");
}

#[test]
fn syntax_errors_and_missing_files_are_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.toml");
    std::fs::write(
        &path,
        "[balancer]\nlisten = \"127.0.0.1:1\"\n[[member]\nname = 1\n",
    )
    .unwrap();
    let text = LbConfig::from_pool_file(&path).unwrap_err().to_string();
    assert!(text.contains("pool.toml:3: not valid TOML"), "{text}");
    let text = LbConfig::from_pool_file(dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("missing.toml: cannot read the pool file"),
        "{text}"
    );
    std::fs::write(&path, "[pool]\nname = \"x\"\n").unwrap();
    let text = LbConfig::from_pool_file(&path).unwrap_err().to_string();
    assert!(
        text.contains("balancer: missing") && text.contains("member: no members"),
        "{text}"
    );
    assert_eq!(run(LbCommand::Serve { pool: path }), 2);
}

#[test]
fn relative_state_file_is_beside_the_pool_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cas.toml");
    std::fs::write(
        &path,
        "[balancer]\nlisten = \"127.0.0.1:1\"\nstate_file = \"st/lb.json\"\n[[member]]\nname = \"a\"\naddress = \"127.0.0.1:2\"\n",
    )
    .unwrap();
    let c = LbConfig::from_pool_file(&path).unwrap();
    assert_eq!(c.state_file, dir.path().join("st/lb.json"));
}

/// Runs a balancer on its own runtime thread so the synchronous CLI can talk to it.
fn balancer_thread() -> (
    String,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let root = dir.path().to_path_buf();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let a = Backend::start("a").await;
            let pool = write_pool(&root, &[("a", a.addr)], "", SLOW_HEALTH);
            let lb = Lb::start(&pool).await;
            url_tx.send(lb.control_url.clone()).unwrap();
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            lb.shutdown().await;
        });
    });
    let url = url_rx.recv().unwrap();
    (url, stop_tx, handle, dir)
}

#[test]
fn cli_exit_codes() {
    let (url, stop, handle, _dir) = balancer_thread();
    let ctl = |url: &str| ControlArgs {
        control: Some(url.to_string()),
        token: None,
        pool: None,
    };
    assert_eq!(
        run(LbCommand::Status {
            control: ctl(&url),
            json: true
        }),
        0
    );
    assert_eq!(
        run(LbCommand::Drainstop {
            member: "a".into(),
            control: ctl(&url)
        }),
        0
    );
    assert_eq!(
        run(LbCommand::InitialState {
            member: "a".into(),
            state: "stopped".into(),
            control: ctl(&url)
        }),
        0
    );
    assert_eq!(
        run(LbCommand::Start {
            member: "a".into(),
            control: ctl(&url)
        }),
        0
    );
    assert_eq!(
        run(LbCommand::Stop {
            member: "ghost".into(),
            control: ctl(&url)
        }),
        2
    );
    assert_eq!(
        run(LbCommand::Status {
            control: ctl("not a url"),
            json: false
        }),
        2
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let st = rt.block_on(async {
        ebb_lb::client::ControlClient::new(&url, None)
            .unwrap()
            .member("a")
            .await
            .unwrap()
    });
    assert_eq!(st.state, HostState::Started);
    assert_eq!(st.initial_state, ebb_lb::InitialState::Stopped);
    stop.send(()).unwrap();
    handle.join().unwrap();
    // Nothing listens there now.
    assert_eq!(
        run(LbCommand::Status {
            control: ctl(&url),
            json: false
        }),
        1
    );
}
