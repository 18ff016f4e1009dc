//! Entry points for the fuzz targets in `fuzz/` and for replaying their committed corpus in
//! the normal test suite (`crates/ebb/tests/fuzz_corpus.rs`). Not an API: it may change at
//! any time.

use crate::auth::{bearer_token, token_matches};
use crate::control;
use crate::status::InitialState;

/// The parts of a control API request ebb's balancer reads itself (hyper parses the HTTP):
/// the path (its `%XX`-decoded segments), the `Authorization` header and an action's body
/// (`POST /members/{name}/initial-state`, or none for the others), given as
/// `PATH \0 AUTHORIZATION \0 BODY`.
pub fn control_request(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == 0);
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let auth = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let segs = control::path_segments(&path);
    assert!(!segs.is_empty());
    if !path.contains('%') {
        // Without escapes, decoding changes nothing: the segments are the path's own.
        let trimmed = path.trim_start_matches('/').trim_end_matches('/');
        assert_eq!(segs.join("/"), trimmed);
    }
    if let Some(t) = bearer_token(&auth) {
        assert!(auth.contains(t));
        assert!(token_matches(t, t));
        assert!(!token_matches(t, &format!("{t}x")));
    }
    match control::initial_state(body) {
        Ok(InitialState::Started | InitialState::Stopped) => {}
        Err(msg) => assert!(msg.contains("expected"), "{msg}"),
    }
    if let Err(msg) = control::no_fields(body, "start") {
        assert!(msg.contains("takes no body"), "{msg}");
    }
}
