//! Caddy's JSON config as ebb reads it: the `reverse_proxy` handler with the user's `@id`,
//! its upstreams, and the routes where ebb parks a drained member's upstream.
//!
//! A parked upstream lives in a route of the same server that never matches (`"expression":
//! "false"`), in a `reverse_proxy` handler of its own. Two reasons: Caddy keeps an
//! upstream's request count only while some handler names it (a removed upstream vanishes
//! from `/reverse_proxy/upstreams` while its requests still run), and the config, which
//! Caddy autosaves, is the one place that survives a restart of Caddy and of ebb. The
//! route's `@id` says which handler the upstream came from and where it stood.

use serde_json::Value;

/// Prefix of the `@id` of every route ebb parks an upstream in.
pub const PARKED_PREFIX: &str = "ebb-parked~";

/// A JSON path into the config, as the admin API's `/config/...` wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(pub Vec<String>);

impl Path {
    /// `/config/a/b/0/...`.
    pub fn url(&self) -> String {
        let mut s = String::from("/config");
        for p in &self.0 {
            s.push('/');
            s.push_str(&ebb_lb::client::percent_encode(p));
        }
        s
    }
}

/// A member's upstream parked by ebb.
#[derive(Debug, Clone, PartialEq)]
pub struct Parked {
    /// Index of the parking route in the server's routes.
    pub route: usize,
    /// The upstream object exactly as it was in the handler.
    pub upstream: Value,
    /// Where it stood in the handler's upstreams.
    pub index: usize,
    /// The `dial` of the upstream before it (put back after that one).
    pub prev: Option<String>,
    /// The `dial` of the upstream that followed it (put back before that one).
    pub next: Option<String>,
}

/// Where the handler is: the routes of its server, and its path inside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Path of the routes of the server holding the handler.
    pub routes: Path,
    /// Path of the handler inside those routes (`["0", "handle", "0"]`).
    pub handler: Vec<String>,
}

/// Finds handler `id` in `config` (the whole `GET /config/`).
pub fn locate(config: &Value, id: &str) -> Result<Location, String> {
    let mut ids = Vec::new();
    let Some(handler) = find_id(config, id, &mut Path(Vec::new()), &mut ids) else {
        ids.retain(|i| !i.starts_with(PARKED_PREFIX));
        return Err(format!(
            "Caddy's config has no object with \"@id\": \"{id}\" ({}): put \"@id\": \"{id}\" on the reverse_proxy handler of the pool, or set balancer.handler_id",
            if ids.is_empty() {
                "it has no @id at all".to_string()
            } else {
                format!("its @ids: {}", ids.join(", "))
            }
        ));
    };
    // apps/http/servers/NAME/routes/...
    let p = &handler.0;
    if p.len() < 6 || p[0] != "apps" || p[1] != "http" || p[2] != "servers" || p[4] != "routes" {
        return Err(format!(
            "\"@id\": \"{id}\" is at {}, not on a handler inside apps/http/servers/NAME/routes",
            handler.url()
        ));
    }
    Ok(Location {
        routes: Path(p[..5].to_vec()),
        handler: p[5..].to_vec(),
    })
}

/// The routes of the handler's server, as ebb reads and changes them.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Where they are.
    pub location: Location,
    /// The routes array.
    routes: Value,
    /// The handler's `upstreams`.
    pub upstreams: Vec<Value>,
    /// The upstreams of this handler parked by ebb, by dial.
    pub parked: Vec<(String, Parked)>,
    /// The handler's `stream_close_delay`, when set (`Err`: written in a form ebb does
    /// not read).
    pub stream_close_delay: Option<Result<std::time::Duration, String>>,
}

impl Snapshot {
    /// Finds handler `id` in `config` (the whole `GET /config/`).
    pub fn find(config: &Value, id: &str) -> Result<Snapshot, String> {
        let location = locate(config, id)?;
        let routes = get(config, &location.routes)
            .cloned()
            .unwrap_or(Value::Null);
        Snapshot::new(routes, location, id)
    }

    /// Reads `routes` (the array at `location.routes`) for handler `id`.
    pub fn new(routes: Value, location: Location, id: &str) -> Result<Snapshot, String> {
        let obj = get(&routes, &Path(location.handler.clone())).unwrap_or(&Value::Null);
        if obj.get("@id").and_then(Value::as_str) != Some(id) {
            return Err(format!(
                "the handler \"{id}\" moved while ebb was reading Caddy's config; try again"
            ));
        }
        if obj.get("handler").and_then(Value::as_str) != Some("reverse_proxy") {
            return Err(format!(
                "\"@id\": \"{id}\" is on a {} handler, not a reverse_proxy handler",
                obj.get("handler")
                    .map_or("(no \"handler\")".to_string(), |h| h.to_string())
            ));
        }
        let upstreams = match obj.get("upstreams") {
            Some(Value::Array(a)) => a.clone(),
            None if obj.get("dynamic_upstreams").is_some() => {
                return Err(format!(
                    "reverse_proxy \"{id}\" uses dynamic_upstreams: ebb can only take members out of a static \"upstreams\" list"
                ))
            }
            None => Vec::new(),
            Some(other) => return Err(format!("\"upstreams\" of \"{id}\" is not a list: {other}")),
        };
        // A Go duration string, or nanoseconds.
        let stream_close_delay = obj.get("stream_close_delay").map(|v| match v {
            Value::String(t) => ebb_config::parse_duration(t),
            Value::Number(n) => n
                .as_u64()
                .map(std::time::Duration::from_nanos)
                .ok_or_else(|| n.to_string()),
            other => Err(other.to_string()),
        });
        let mut parked = Vec::new();
        if let Value::Array(rs) = &routes {
            let prefix = format!("{PARKED_PREFIX}{id}~");
            for (i, r) in rs.iter().enumerate() {
                let Some(rest) = r
                    .get("@id")
                    .and_then(Value::as_str)
                    .and_then(|rid| rid.strip_prefix(&prefix))
                else {
                    continue;
                };
                let upstream = r
                    .pointer("/handle/0/upstreams/0")
                    .cloned()
                    .unwrap_or(Value::Null);
                let Some(dial) = dial_of(&upstream).map(String::from) else {
                    continue;
                };
                let Some(tail) = rest.strip_prefix(&format!("{dial}~")) else {
                    continue;
                };
                let mut f = tail.splitn(3, '~');
                let index = f.next().and_then(|x| x.parse().ok()).unwrap_or(usize::MAX);
                let some = |x: Option<&str>| x.filter(|x| !x.is_empty()).map(String::from);
                let (prev, next) = (some(f.next()), some(f.next()));
                parked.push((
                    dial,
                    Parked {
                        route: i,
                        upstream,
                        index,
                        prev,
                        next,
                    },
                ));
            }
        }
        Ok(Snapshot {
            location,
            routes,
            upstreams,
            parked,
            stream_close_delay,
        })
    }

    /// Index of the upstream dialled at `dial` in the handler.
    pub fn position(&self, dial: &str) -> Option<usize> {
        self.upstreams.iter().position(|u| dial_of(u) == Some(dial))
    }

    /// The parked upstream dialled at `dial`.
    pub fn parked(&self, dial: &str) -> Option<&Parked> {
        self.parked.iter().find(|(d, _)| d == dial).map(|(_, p)| p)
    }

    /// Where a parked upstream goes back in `dials`: before the one that followed it,
    /// else after the one before it, else at its old index (or the end).
    fn return_position(dials: &[String], p: &Parked) -> usize {
        let at = |d: &Option<String>| d.as_ref().and_then(|d| dials.iter().position(|x| x == d));
        at(&p.next)
            .or_else(|| at(&p.prev).map(|i| i + 1))
            .unwrap_or(p.index.min(dials.len()))
    }

    /// The handler's dials with the parked ones where they would go back: the order the
    /// user wrote, as far as ebb can tell.
    fn full_order(&self) -> Vec<String> {
        let mut dials: Vec<String> = self
            .upstreams
            .iter()
            .filter_map(|u| dial_of(u).map(String::from))
            .collect();
        for (d, p) in &self.parked {
            if !dials.contains(d) {
                let at = Self::return_position(&dials, p);
                dials.insert(at, d.clone());
            }
        }
        dials
    }

    /// The routes with the handler's upstream at `i` moved to a parking route, in one change.
    pub fn with_parked(&self, handler_id: &str, i: usize) -> Value {
        let upstream = self.upstreams[i].clone();
        let dial = dial_of(&upstream).unwrap_or("").to_string();
        let order = self.full_order();
        let k = order.iter().position(|d| *d == dial);
        let prev = k.and_then(|k| k.checked_sub(1)).map(|k| order[k].clone());
        let next = k.and_then(|k| order.get(k + 1)).cloned();
        let mut routes = self.routes.clone();
        let mut ups = self.upstreams.clone();
        ups.remove(i);
        self.set_upstreams(&mut routes, ups);
        if self.parked(&dial).is_none() {
            if let Value::Array(rs) = &mut routes {
                rs.push(serde_json::json!({
                    "@id": format!(
                        "{PARKED_PREFIX}{handler_id}~{dial}~{i}~{}~{}",
                        prev.unwrap_or_default(),
                        next.unwrap_or_default()
                    ),
                    "match": [{"expression": "false"}],
                    "handle": [{"handler": "reverse_proxy", "upstreams": [upstream]}],
                }));
            }
        }
        routes
    }

    /// The routes with the parked upstream dialled at `dial` back in the handler where it
    /// stood, exactly as it was, and its parking route gone, in one change.
    pub fn with_returned(&self, dial: &str) -> Option<Value> {
        let p = self.parked(dial)?;
        let mut routes = self.routes.clone();
        let mut ups = self.upstreams.clone();
        if self.position(dial).is_none() {
            let dials: Vec<String> = ups
                .iter()
                .filter_map(|u| dial_of(u).map(String::from))
                .collect();
            ups.insert(Self::return_position(&dials, p), p.upstream.clone());
        }
        self.set_upstreams(&mut routes, ups);
        if let Value::Array(rs) = &mut routes {
            rs.remove(p.route);
        }
        Some(routes)
    }

    fn set_upstreams(&self, routes: &mut Value, ups: Vec<Value>) {
        let mut cur = routes;
        for k in &self.location.handler {
            cur = match cur {
                Value::Object(o) => o.entry(k.clone()).or_insert(Value::Null),
                Value::Array(a) => match k.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    Some(v) => v,
                    None => return,
                },
                _ => return,
            };
        }
        if let Value::Object(o) = cur {
            o.insert("upstreams".into(), Value::Array(ups));
        }
    }
}

/// An upstream's `dial`.
pub fn dial_of(u: &Value) -> Option<&str> {
    u.get("dial").and_then(Value::as_str)
}

fn get<'a>(v: &'a Value, p: &Path) -> Option<&'a Value> {
    let mut cur = v;
    for k in &p.0 {
        cur = match cur {
            Value::Object(o) => o.get(k)?,
            Value::Array(a) => a.get(k.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn find_id(v: &Value, id: &str, at: &mut Path, ids: &mut Vec<String>) -> Option<Path> {
    match v {
        Value::Object(o) => {
            if let Some(i) = o.get("@id").and_then(Value::as_str) {
                if i == id {
                    return Some(at.clone());
                }
                ids.push(i.to_string());
            }
            for (k, child) in o {
                at.0.push(k.clone());
                let found = find_id(child, id, at, ids);
                at.0.pop();
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                at.0.push(i.to_string());
                let found = find_id(child, id, at, ids);
                at.0.pop();
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> Value {
        json!({"apps": {"http": {"servers": {"srv0": {"@id": "front", "routes": [
            {"handle": [{"@id": "web", "handler": "reverse_proxy",
                "upstreams": [{"dial": "a:1"}, {"dial": "b:1", "max_requests": 100}, {"dial": "c:1"}, {"dial": "d:1"}]}]}
        ]}}}}})
    }

    fn with_routes(mut c: Value, routes: Value) -> Value {
        c["apps"]["http"]["servers"]["srv0"]["routes"] = routes;
        c
    }

    fn dials(s: &Snapshot) -> Vec<&str> {
        s.upstreams.iter().filter_map(dial_of).collect()
    }

    #[test]
    fn parks_and_returns_in_one_change_each_keeping_order_and_settings() {
        let c = config();
        let s = Snapshot::find(&c, "web").unwrap();
        assert_eq!(
            s.location.routes.url(),
            "/config/apps/http/servers/srv0/routes"
        );
        assert_eq!(s.location.handler, vec!["0", "handle", "0"]);
        let r = s.with_parked("web", 1);
        assert_eq!(r[1]["@id"], "ebb-parked~web~b:1~1~a:1~c:1");
        assert_eq!(r[1]["match"], json!([{"expression": "false"}]));
        assert_eq!(
            r[1]["handle"][0]["upstreams"][0],
            json!({"dial": "b:1", "max_requests": 100})
        );
        let s = Snapshot::find(&with_routes(c.clone(), r), "web").unwrap();
        assert_eq!(dials(&s), vec!["a:1", "c:1", "d:1"]);
        assert_eq!(s.parked("b:1").unwrap().next.as_deref(), Some("c:1"));

        // Two out at once (c then d), back in either order: the order the user wrote.
        let s2 = Snapshot::find(&with_routes(c.clone(), s.with_parked("web", 1)), "web").unwrap();
        assert_eq!(dials(&s2), vec!["a:1", "d:1"]);
        let s3 = Snapshot::find(&with_routes(c.clone(), s2.with_parked("web", 1)), "web").unwrap();
        assert_eq!(dials(&s3), vec!["a:1"]);
        for order in [
            ["b:1", "c:1", "d:1"],
            ["d:1", "c:1", "b:1"],
            ["c:1", "b:1", "d:1"],
        ] {
            let mut cur = s3.clone();
            for d in order {
                let r = cur.with_returned(d).unwrap();
                cur = Snapshot::find(&with_routes(c.clone(), r), "web").unwrap();
            }
            assert_eq!(
                cur.upstreams,
                config()["apps"]["http"]["servers"]["srv0"]["routes"][0]["handle"][0]["upstreams"]
                    .as_array()
                    .unwrap()
                    .clone(),
                "{order:?}"
            );
            assert!(cur.parked.is_empty());
        }
    }

    #[test]
    fn wrong_ids_say_what_is_there() {
        let c = config();
        assert_eq!(
            Snapshot::find(&c, "api").unwrap_err(),
            "Caddy's config has no object with \"@id\": \"api\" (its @ids: front, web): put \"@id\": \"api\" on the reverse_proxy handler of the pool, or set balancer.handler_id"
        );
        let e = Snapshot::find(&c, "front").unwrap_err();
        assert!(
            e.contains("not on a handler inside apps/http/servers/NAME/routes"),
            "{e}"
        );
    }

    #[test]
    fn paths_are_percent_encoded() {
        assert_eq!(
            Path(vec!["a b".into(), "x/y".into()]).url(),
            "/config/a%20b/x%2Fy"
        );
    }
}
