//! The live progress display through a real pseudo-terminal (openpty), 40 columns wide:
//! live lines are cut to the width (a wrapped one would throw off the next redraw's
//! cursor-up count and leave fragments), and after Ctrl-C no live line is left on the
//! screen. The bytes ebb writes are played on a small terminal model (autowrap, `\r`,
//! `\n`, cursor up, erase below) and the final screen is checked.

mod support;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const COLS: usize = 40;

/// A pseudo-terminal of `cols` columns: (master, slave).
fn openpty(cols: u16) -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: 24,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the ints we own; the name is not asked for.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened for us and are owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// A terminal screen: rows of cells, the cursor, and whether a live line ever wrapped.
struct Screen {
    rows: Vec<Vec<char>>,
    row: usize,
    col: usize,
    live_line_wrapped: Option<String>,
}

impl Screen {
    fn play(bytes: &[u8]) -> Screen {
        let mut s = Screen {
            rows: vec![Vec::new()],
            row: 0,
            col: 0,
            live_line_wrapped: None,
        };
        let text = String::from_utf8_lossy(bytes);
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' => s.col = 0,
                '\n' => s.down(),
                '\x1b' if chars.peek() == Some(&'[') => {
                    chars.next();
                    let mut param = String::new();
                    while let Some(&d) = chars.peek() {
                        if d.is_ascii_digit() || d == ';' || d == '?' {
                            param.push(d);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    let n: usize = param.parse().unwrap_or(1);
                    match chars.next() {
                        Some('A') => s.row = s.row.saturating_sub(n.max(1)),
                        Some('J') => {
                            s.rows[s.row].truncate(s.col);
                            s.rows.truncate(s.row + 1);
                        }
                        Some('K') => s.rows[s.row].truncate(s.col),
                        _ => {}
                    }
                }
                c if c.is_control() => {}
                c => s.put(c),
            }
        }
        s
    }

    fn down(&mut self) {
        self.row += 1;
        if self.row == self.rows.len() {
            self.rows.push(Vec::new());
        }
    }

    fn put(&mut self, c: char) {
        if self.col == COLS {
            // Autowrap, as a terminal does on the character after the last column.
            let line: String = self.rows[self.row].iter().collect();
            if line.contains('▸') && self.live_line_wrapped.is_none() {
                self.live_line_wrapped = Some(line);
            }
            self.col = 0;
            self.down();
        }
        let r = &mut self.rows[self.row];
        while r.len() < self.col {
            r.push(' ');
        }
        if self.col < r.len() {
            r[self.col] = c;
        } else {
            r.push(c);
        }
        self.col += 1;
    }

    fn lines(&self) -> Vec<String> {
        self.rows
            .iter()
            .map(|r| r.iter().collect::<String>().trim_end().to_string())
            .collect()
    }
}

#[test]
fn live_lines_fit_a_narrow_terminal_and_none_is_left_after_ctrl_c() {
    let long = "member-with-a-rather-long-name";
    let f = Fixture::new(&[long, "b"]);
    let pool = f.pool(
        "",
        &[long, "b"],
        "[[runbook.step]]\nname = \"install-the-new-release-of-everything\"\nrun = \"touch {var.dir}/lb/started; sleep 60\"\n",
    );
    let (master, slave) = openpty(COLS as u16);
    let mut cmd = ebb();
    cmd.env_remove("EBB_PLAIN")
        .arg("run")
        .arg(&pool)
        .current_dir(f.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().expect("spawn ebb");
    // The parent's copies of the slave end are closed now: the master reads EOF (EIO) once
    // ebb has exited.
    drop(cmd);
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let reader = {
        let out = out.clone();
        let mut master = std::fs::File::from(master);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let seen = |what: &str| String::from_utf8_lossy(&out.lock().unwrap()).contains(what);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(f.path("lb/started").exists() && seen("▸")) {
        assert!(
            Instant::now() < deadline,
            "no live line: {}",
            String::from_utf8_lossy(&out.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A few redraws by the ticker (every 500 ms) while the step runs.
    std::thread::sleep(Duration::from_millis(1300));
    // SAFETY: signalling the ebb this test started, as the terminal's Ctrl-C would.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "ebb did not stop after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    reader.join().expect("reader");
    let bytes = out.lock().unwrap().clone();
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    assert_eq!(status.code(), Some(130), "{raw}");
    assert!(
        raw.contains("\x1b[") && raw.contains("\x1b[J"),
        "the live display was not used: {raw:?}"
    );

    let screen = Screen::play(&bytes);
    let lines = screen.lines();
    let shown = lines.join("\n");
    assert_eq!(
        screen.live_line_wrapped, None,
        "a live line was wider than the {COLS}-column terminal; screen:\n{shown}"
    );
    assert!(
        lines
            .iter()
            .all(|l| !l.contains('▸') && !l.contains("pool: ")),
        "a live line was left on the screen:\n{shown}"
    );
    assert!(shown.contains("SIGINT"), "{shown}");
    assert!(
        lines.iter().any(|l| l.starts_with("ebb: run 1 halted")),
        "{shown}"
    );
}
