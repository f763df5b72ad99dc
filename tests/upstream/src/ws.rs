//! `/ws`: the WebSocket handshake by hand (hyper answers 101), then an echo.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Message, Role};

use crate::routes::{Body, text};

/// Answers a WebSocket upgrade with 101 and echoes on the upgraded
/// connection; anything else gets 400.
pub fn upgrade(mut request: Request<Incoming>, reply: Arc<str>) -> Response<Body> {
    let wants_websocket =
        request.headers().get(UPGRADE).is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let key = request.headers().get(SEC_WEBSOCKET_KEY).map(|key| derive_accept_key(key.as_bytes()));
    let (true, Some(accept)) = (wants_websocket, key) else {
        return text(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n");
    };
    tokio::spawn(echo(hyper::upgrade::on(&mut request), reply));
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_ACCEPT, accept)
        .body(Empty::<Bytes>::new().boxed())
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "bad accept key\n"))
}

/// Answers each text message with `REPLY: MESSAGE` and each binary one with
/// itself, until the client closes (tungstenite answers pings and the close).
async fn echo(upgrade: OnUpgrade, reply: Arc<str>) {
    let Ok(upgraded) = upgrade.await else { return };
    let mut socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    while let Some(Ok(message)) = socket.next().await {
        let answer = match message {
            Message::Text(text) => Message::text(format!("{reply}: {}", text.as_str())),
            Message::Binary(data) => Message::Binary(data),
            _ => continue,
        };
        if socket.send(answer).await.is_err() {
            return;
        }
    }
}
