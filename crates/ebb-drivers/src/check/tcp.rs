//! The `tcp` check: `tcp = "host:port"` passes when a connection opens.

use async_trait::async_trait;
use ebb_config::{Context, Kind};
use ebb_engine::interfaces::{Check, CheckContext, Transport};
use ebb_engine::placeholder::{render, Quote};
use ebb_engine::plan::Member;
use std::collections::BTreeMap;
use std::time::Duration;

/// A TCP connect.
#[derive(Debug, Clone)]
pub struct TcpCheck {
    /// `host:port` template.
    pub address: String,
}

fn read(cx: &mut Context, key: &str, value: &toml::Value) -> Option<TcpCheck> {
    super::string(cx, key, value, "host:port to connect to").map(|address| TcpCheck { address })
}

/// `tcp = "host:port"`.
pub const KIND: super::Descriptor<TcpCheck> = super::Descriptor {
    name: "tcp",
    value: Kind::String,
    description: "host:port to connect to",
    example: "tcp = \"host:port\"",
    keys: &[],
    read,
};

#[async_trait]
impl Check for TcpCheck {
    async fn run(
        &self,
        member: &Member,
        _: &dyn Transport,
        _: &CheckContext,
        _: Duration,
    ) -> Result<String, String> {
        let addr = render(&self.address, member, Quote::None, &BTreeMap::new());
        tokio::net::TcpStream::connect(&addr)
            .await
            .map(|_| format!("connected to {addr}"))
            .map_err(|e| format!("cannot connect to {addr}: {e}"))
    }
    fn templates(&self) -> Vec<(String, String)> {
        vec![("tcp".into(), self.address.clone())]
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
