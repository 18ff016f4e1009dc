//! The `command` check: `command = "..."` runs on the member and passes on exit 0.

use async_trait::async_trait;
use ebb_config::{Context, Kind};
use ebb_engine::interfaces::{Check, CheckContext, Transport};
use ebb_engine::placeholder::{render, Quote};
use ebb_engine::plan::Member;
use std::collections::BTreeMap;
use std::time::Duration;

/// A command on the member.
#[derive(Debug, Clone)]
pub struct CommandCheck {
    /// Command template.
    pub command: String,
}

fn read(cx: &mut Context, key: &str, value: &toml::Value) -> Option<CommandCheck> {
    super::string(cx, key, value, "the command to run on the member")
        .map(|command| CommandCheck { command })
}

/// `command = "..."`.
pub const KIND: super::Descriptor<CommandCheck> = super::Descriptor {
    name: "command",
    value: Kind::String,
    description: "a command on the member; passes on exit 0",
    example: "command = \"...\"",
    keys: &[],
    read,
};

#[async_trait]
impl Check for CommandCheck {
    async fn run(
        &self,
        member: &Member,
        transport: &dyn Transport,
        _: &CheckContext,
        timeout: Duration,
    ) -> Result<String, String> {
        let cmd = render(
            &self.command,
            member,
            Quote::from(member.shell),
            &BTreeMap::new(),
        );
        let out = transport
            .run(&cmd, &BTreeMap::new(), timeout, None)
            .await
            .map_err(|e| e.to_string())?;
        match out.exit_code {
            Some(0) => Ok("exit 0".into()),
            Some(c) => Err(format!(
                "`{cmd}` exited with {c}: {}",
                super::last_line(&out.tail)
            )),
            None => Err(format!("`{cmd}` did not finish (timed out or killed)")),
        }
    }
    fn templates(&self) -> Vec<(String, String)> {
        vec![("command".into(), self.command.clone())]
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
