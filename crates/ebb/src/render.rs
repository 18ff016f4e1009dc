//! Renderers of the engine's events: a live display on a terminal, plain lines otherwise,
//! or one JSON object per line with `--json`.

use ebb_engine::events::{now_ms, Event, EventSink, Stamped};
use ebb_engine::plan::Plan;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

struct Live {
    tty: bool,
    finished: bool,
    drawn: usize,
    active: BTreeMap<String, (String, Instant, Option<u64>)>,
    /// In service, total, and how many the balancer could not be asked about.
    in_service: Option<(usize, usize, usize)>,
    order: Vec<String>,
}

/// Turns events into output.
pub struct Renderer {
    /// JSON lines instead of human output.
    pub json: bool,
    live: Arc<Mutex<Live>>,
}

fn is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(2) == 1 }
}

impl Renderer {
    /// A renderer for a plan's run.
    pub fn new(json: bool, plan: &Plan) -> Self {
        Renderer {
            json,
            live: Arc::new(Mutex::new(Live {
                tty: is_tty() && std::env::var_os("EBB_PLAIN").is_none(),
                finished: false,
                drawn: 0,
                active: BTreeMap::new(),
                in_service: None,
                order: plan.members.iter().map(|m| m.name.clone()).collect(),
            })),
        }
    }

    /// On a terminal, redraws the live block twice a second so elapsed times move while a
    /// long step runs. Needs a tokio runtime.
    pub fn start_ticker(&self) {
        let tty = self.live.lock().map(|l| l.tty).unwrap_or(false);
        if self.json || !tty {
            return;
        }
        let live = self.live.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
                if l.finished {
                    break;
                }
                l.clear();
                l.draw();
            }
        });
    }

    /// The sink to hand the engine.
    pub fn sink(&self) -> EventSink {
        if self.json {
            return Arc::new(|e: &Event| {
                let line = serde_json::to_string(&Stamped {
                    ts_ms: now_ms(),
                    event: e,
                })
                .unwrap_or_default();
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            });
        }
        let live = self.live.clone();
        Arc::new(move |e: &Event| {
            let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
            l.handle(e);
        })
    }

    /// Prints a line from outside the event stream (the signal that stops the run) above
    /// the live block, so the block's next redraw still clears exactly itself and no stale
    /// live line is left behind.
    pub fn announcer(&self) -> Arc<dyn Fn(&str) + Send + Sync> {
        let live = self.live.clone();
        Arc::new(move |line: &str| {
            let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
            l.clear();
            ebb_out::errln!("{line}");
            if !l.finished {
                l.draw();
            }
        })
    }

    /// Clears the live block before the final message.
    pub fn finish(&self) {
        if !self.json {
            let mut l = self.live.lock().unwrap_or_else(|p| p.into_inner());
            l.finished = true;
            l.clear();
        }
    }
}

/// The pool's line: how many are in service, or that the balancer cannot be asked (an
/// unreachable balancer is not a pool with nobody in service).
fn pool_line(in_service: usize, total: usize, unreadable: usize) -> String {
    match unreadable {
        0 => format!("pool: {in_service} of {total} in service"),
        u if u >= total => "pool: balancer unreachable (no member's state is known)".to_string(),
        u => format!(
            "pool: {in_service} of {total} in service; the balancer cannot tell the state of {u}"
        ),
    }
}

fn clock() -> String {
    let secs = now_ms() / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

impl Live {
    fn clear(&mut self) {
        if self.tty && self.drawn > 0 {
            ebb_out::err!("\x1b[{}A\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn draw(&mut self) {
        if !self.tty {
            return;
        }
        let mut lines = Vec::new();
        for name in &self.order {
            if let Some((step, since, conns)) = self.active.get(name) {
                let el = ebb_config::format_duration(since.elapsed());
                let c = conns
                    .map(|c| format!(", {c} connection(s) open"))
                    .unwrap_or_default();
                lines.push(format!("  ▸ {name:<14} {step} ({el}{c})"));
            }
        }
        if let Some((n, t, u)) = self.in_service {
            lines.push(format!("  {}", pool_line(n, t, u)));
        }
        // Cut to the terminal's width: a wrapped line would throw off the next clear and
        // leave fragments on a narrow terminal.
        let width = ebb_out::terminal_width();
        for l in &lines {
            ebb_out::errln!("{}", ebb_out::fit(l, width));
        }
        self.drawn = lines.len();
    }

    fn log(&mut self, line: String) {
        ebb_out::errln!("{} {line}", clock());
    }

    fn handle(&mut self, e: &Event) {
        self.clear();
        match e {
            Event::RunStarted {
                run_id,
                pool,
                members,
                resumed,
            } => self.log(format!(
                "{} run {run_id} of pool {pool} ({} members)",
                if *resumed { "resuming" } else { "starting" },
                members.len()
            )),
            Event::WaveStarted { wave, members } => self.log(format!(
                "{}: {}",
                ebb_engine::plan::wave_label(wave),
                members.join(", ")
            )),
            Event::MemberStarted { member } => self.log(format!("{member}: taking out of service")),
            Event::StepStarted { member, step, .. } => {
                self.active
                    .insert(member.clone(), (step.clone(), Instant::now(), None));
                if !self.tty {
                    self.log(format!("{member}: {step} …"));
                }
            }
            Event::StepFinished {
                member,
                step,
                outcome,
                duration_ms,
                detail,
                exit_code,
                ..
            } => {
                let code = exit_code.map(|c| format!(" exit {c}")).unwrap_or_default();
                let d = if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                };
                self.log(format!(
                    "{member}: {step} {outcome}{code} in {}{d}",
                    ebb_config::format_duration(std::time::Duration::from_millis(*duration_ms))
                ));
            }
            Event::Output { member, step, line } => {
                if !self.tty {
                    self.log(format!("{member}: {step} | {line}"));
                }
            }
            Event::DrainProgress {
                member,
                active_connections,
            } => {
                if let Some(a) = self.active.get_mut(member) {
                    a.2 = Some(*active_connections);
                }
                if !self.tty {
                    self.log(format!(
                        "{member}: draining, {active_connections} connection(s) open"
                    ));
                }
            }
            Event::MemberFinished {
                member,
                state,
                reason,
                left,
            } => {
                self.active.remove(member);
                if state == "done" {
                    self.log(format!("{member}: done, back in service"));
                } else {
                    self.log(format!("{member}: FAILED ({reason}); {left}"));
                }
            }
            Event::Pool {
                in_service,
                total,
                unreadable,
            } => {
                self.in_service = Some((*in_service, *total, *unreadable));
                if !self.tty {
                    self.log(pool_line(*in_service, *total, *unreadable));
                }
            }
            Event::Waiting { member, reason, .. } => self.log(format!(
                "waiting{}: {reason}",
                member
                    .as_ref()
                    .map(|m| format!(" for {m}"))
                    .unwrap_or_default()
            )),
            Event::Notice { member, message } => self.log(match member {
                Some(m) => format!("{m}: {message}"),
                None => message.clone(),
            }),
            Event::Warning { message } => self.log(format!("warning: {message}")),
            Event::RunFinished { .. } => {
                self.active.clear();
            }
        }
        self.draw();
    }
}
