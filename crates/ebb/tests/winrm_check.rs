//! `ebb check` against Windows members reached over WinRM (the fake WS-Management endpoint
//! of the drivers' tests, over HTTP and over HTTPS with a private CA): every member is
//! logged in to, and each one that cannot be reached is named with the word WinRM and the
//! reason (auth failed, TLS, unreachable), exit 1; with the CA given in `ca_file`, exit 0.

mod support;
#[path = "../../ebb-drivers/tests/support_winrm/mod.rs"]
mod support_winrm;
#[allow(dead_code)]
#[path = "../../ebb-drivers/tests/support/tls.rs"]
mod tls;
use support::*;
use support_winrm::{FakeWinrm, Login, Reply};

const PASSWORD: &str = "s3cret pass";

/// `pool.toml` with one winrm member per `(name, keys)`, logging in as `ebb` with Basic.
fn pool(fx: &Fixture, members: &[(&str, String)]) -> std::path::PathBuf {
    let mut text = format!(
        "[pool]\nname = \"cas\"\n\n{}\n[defaults]\ntransport = \"winrm\"\nshell = \"powershell\"\nwinrm_auth = \"basic\"\nwinrm_user = \"ebb\"\n\n",
        fx.balancer()
    );
    for (name, keys) in members {
        text.push_str(&format!(
            "[[member]]\nname = \"{name}\"\naddress = \"127.0.0.1\"\n{keys}\n"
        ));
    }
    text.push_str("[[runbook.step]]\nname = \"rollup\"\nrun = \"Install-Rollup\"\n");
    let p = fx.path("pool.toml");
    std::fs::write(&p, text).expect("write pool");
    p
}

/// Runs `ebb check POOL` off the runtime (the fakes answer on it meanwhile).
async fn check(pool: &std::path::Path) -> std::process::Output {
    let pool = pool.to_path_buf();
    tokio::task::spawn_blocking(move || {
        ebb()
            .args(["check"])
            .arg(&pool)
            .env("EBB_TEST_WINRM_GOOD", PASSWORD)
            .env("EBB_TEST_WINRM_WRONG", "not the password")
            .output()
            .expect("run ebb check")
    })
    .await
    .expect("ebb check")
}

fn boot_time(fake: &FakeWinrm) {
    fake.script(
        "LastBootUpTime",
        Reply::out("2026-11-29T06:00:00.0000000Z\r\n", 0),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_each_winrm_member_it_cannot_reach_with_the_reason() {
    let fx = Fixture::new(&["cas1", "cas2", "cas3", "cas4"]);
    let certs = tls::private_ca(fx.dir.path());
    let plain = FakeWinrm::start("ebb", PASSWORD).await;
    boot_time(&plain);
    let https = FakeWinrm::start_tls(
        "ebb",
        PASSWORD,
        tls::acceptor(&certs.server.0, &certs.server.1),
        Login::Basic,
    )
    .await;
    boot_time(&https);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let ca = certs.ca.display();
    let good = "winrm_password_env = \"EBB_TEST_WINRM_GOOD\"";

    // Every member reachable: cas1 over http, cas2 over https with the private CA.
    let p = pool(
        &fx,
        &[
            ("cas1", format!("winrm_url = \"{}\"\n{good}\n", plain.url())),
            (
                "cas2",
                format!(
                    "winrm_url = \"{}\"\nca_file = \"{ca}\"\n{good}\n",
                    https.https_url()
                ),
            ),
        ],
    );
    let out = check(&p).await;
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("WinRM"), "{text}");
    assert_eq!(https.seen(|s| s.shells_created), 1, "cas2 was logged in to");

    // One member for each reason, and one that is fine.
    let p = pool(
        &fx,
        &[
            ("cas1", format!("winrm_url = \"{}\"\n{good}\n", plain.url())),
            (
                "cas2",
                format!(
                    "winrm_url = \"{}\"\nwinrm_password_env = \"EBB_TEST_WINRM_WRONG\"\n",
                    plain.url()
                ),
            ),
            (
                "cas3",
                format!("winrm_url = \"{}\"\n{good}\n", https.https_url()),
            ),
            (
                "cas4",
                format!("winrm_url = \"http://127.0.0.1:{closed}/wsman\"\n{good}\n"),
            ),
        ],
    );
    let out = check(&p).await;
    let text = format!("{}{}", stdout(&out), stderr(&out));
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = |member: &str| {
        text.lines()
            .find(|l| l.contains(&format!("member \"{member}\"")))
            .unwrap_or_else(|| panic!("{member} is named: {text}"))
            .to_string()
    };
    let cas2 = line("cas2");
    assert!(
        cas2.contains("WinRM") && cas2.contains("auth failed"),
        "{cas2}"
    );
    assert!(!text.contains("not the password"), "never printed: {text}");
    let cas3 = line("cas3");
    assert!(cas3.contains("WinRM") && cas3.contains("TLS"), "{cas3}");
    assert!(cas3.contains("ca_file"), "says what to set: {cas3}");
    let cas4 = line("cas4");
    assert!(
        cas4.contains("WinRM") && cas4.contains("unreachable"),
        "{cas4}"
    );
    assert!(
        !text.contains("member \"cas1\""),
        "cas1 is reachable: {text}"
    );
}
