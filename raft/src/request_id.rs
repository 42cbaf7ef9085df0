//! The id of the client request a task works for, so it follows the request across nodes: the
//! API sets it (the client's `X-Request-Id`, or one it makes) around the request's handling,
//! log lines carry it through the request's span, and every hop to another node passes it on
//! (the HTTP relays as `X-Request-Id`, a proposal forwarded to the leader as gRPC metadata,
//! where the leader's handling runs under it too).

use std::future::Future;

/// The header (and gRPC metadata key) the id travels in.
pub const HEADER: &str = "x-request-id";
/// The longest id accepted from a client (longer ones are replaced by a new one).
pub const MAX_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `f` as the work of request `id`.
pub async fn scope<F: Future>(id: String, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}

/// The id of the request the current task works for, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

/// A client's id when it is usable (1 to [`MAX_LEN`] visible ASCII characters), else a new one.
pub fn accept_or_make(given: Option<&str>) -> String {
    match given {
        Some(id) if (1..=MAX_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()) => id.to_string(),
        _ => {
            let bytes: [u8; 12] = rand::random();
            hex::encode(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_ids_are_kept_and_others_replaced() {
        assert_eq!(accept_or_make(Some("abc-123")), "abc-123");
        assert_eq!(accept_or_make(None).len(), 24);
        assert_ne!(accept_or_make(Some("has space")), "has space");
        assert_eq!(accept_or_make(Some(&"x".repeat(500))).len(), 24);
    }

    #[tokio::test]
    async fn the_id_is_there_inside_its_scope_only() {
        assert_eq!(current(), None);
        let inside = scope("r1".into(), async { current() }).await;
        assert_eq!(inside.as_deref(), Some("r1"));
    }
}
