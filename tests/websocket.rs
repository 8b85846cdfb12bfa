//! WebSocket listeners (issue 7), as PROTOCOL.md has them: any path, with
//! or without `Origin`, one message per command, exactly one message back
//! (empty where TCP sends nothing), protocol 2 included.

mod common;

use common::{wait_until, TestServer};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

fn ws_server() -> TestServer {
    TestServer::with_config(|c| c.websocket = vec!["127.0.0.1:0".into()])
}

fn ws_addr(server: &TestServer) -> SocketAddr {
    let handle = server.handle.as_ref().expect("running server");
    handle.websocket_addrs()[0]
}

struct Ws {
    ws: WebSocket<TcpStream>,
}

impl Ws {
    fn connect(server: &TestServer, path: &str, origin: Option<&str>) -> Ws {
        let addr = ws_addr(server);
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut request = format!("ws://{addr}{path}")
            .into_client_request()
            .expect("request");
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", origin.parse().expect("header value"));
        }
        let (ws, _) = tungstenite::client(request, tcp).expect("websocket handshake");
        Ws { ws }
    }

    /// This end's `IP:PORT`: the server's default name for us.
    fn name(&self) -> String {
        self.ws
            .get_ref()
            .local_addr()
            .expect("local addr")
            .to_string()
    }

    /// The next data message (text or binary) as bytes, and whether it
    /// was text.
    fn reply(&mut self) -> (Vec<u8>, bool) {
        loop {
            match self.ws.read().expect("read reply") {
                Message::Text(t) => return (t.as_bytes().to_vec(), true),
                Message::Binary(b) => return (b.to_vec(), false),
                _ => continue,
            }
        }
    }

    fn send(&mut self, message: Message) {
        self.ws.send(message).expect("send");
    }

    /// Sends `command` as a text message and returns the text reply.
    fn cmd(&mut self, command: &str) -> String {
        self.send(Message::text(command));
        let (bytes, text) = self.reply();
        assert!(text, "reply to {command:?} was not a text message");
        String::from_utf8(bytes).expect("utf-8")
    }
}

#[test]
fn get_and_release_with_and_without_newline() {
    let server = ws_server();
    let mut ws = Ws::connect(&server, "/", None);
    assert_eq!(ws.cmd("g foo"), "1 Lock Get Success: foo\n");
    assert_eq!(ws.cmd("g foo\n"), "1 Lock Get Success: foo\n");
    assert_eq!(server.connect().cmd("g foo"), "0 Lock Get Failure: foo\n");
    assert_eq!(ws.cmd("r foo\n"), "1 Lock Release Success: foo\n");
    assert_eq!(ws.cmd("r foo"), "0 Lock Release Failure: foo\n");
}

#[test]
fn identity_is_the_peer_address() {
    let server = ws_server();
    let mut ws = Ws::connect(&server, "/", None);
    let name = ws.name();
    assert_eq!(ws.cmd("me"), format!("1 {name} {name}\n"));
    ws.cmd("g held");
    assert_eq!(server.connect().cmd("d held"), format!("held: {name}\n"));
}

#[test]
fn any_path_with_or_without_origin() {
    let server = ws_server();
    for (path, origin) in [
        ("/", None),
        ("/lockd", Some("http://example.com")),
        ("/some/deep/path?x=1", Some("null")),
        ("/ws", None),
    ] {
        let mut ws = Ws::connect(&server, path, origin);
        assert_eq!(ws.cmd("ping"), "1 pong\n", "{path} {origin:?}");
    }
}

#[test]
fn a_multi_line_reply_is_one_message() {
    let server = ws_server();
    let mut ws = Ws::connect(&server, "/", None);
    let q = ws.cmd("q");
    let lines: Vec<&str> = q.lines().collect();
    assert_eq!(lines.len(), 19, "{q}");
    assert!(lines[0].starts_with("command_d: "), "{q}");
    assert!(q.ends_with('\n'));
    assert!(lines.contains(&"connections: 1"), "{q}");
    // The next command's reply is its own message.
    assert_eq!(ws.cmd("ping"), "1 pong\n");
}

#[test]
fn silence_is_an_empty_message() {
    let server = ws_server();
    let mut ws = Ws::connect(&server, "/", None);
    assert_eq!(ws.cmd("xx"), "");
    assert_eq!(ws.cmd(""), "");
    assert_eq!(ws.cmd("   \n"), "");
    assert_eq!(ws.cmd("d nobody-holds-this"), "");
    assert_eq!(ws.cmd("ping"), "1 pong\n");
    let mut tcp = server.connect();
    assert_eq!(tcp.stat("invalid_commands"), 1);
}

#[test]
fn binary_messages_are_commands_too() {
    let server = ws_server();
    let mut ws = Ws::connect(&server, "/", None);
    ws.send(Message::binary(b"g bin\n".to_vec()));
    assert_eq!(ws.reply(), (b"1 Lock Get Success: bin\n".to_vec(), true));
    // A newline inside counts as whitespace.
    assert_eq!(ws.cmd("g a\nb"), "1 Lock Get Success: a b\n");
    // A reply that is not UTF-8 cannot be a text message: it comes back as
    // binary, bytes unchanged.
    ws.send(Message::binary(b"g \xff\x00".to_vec()));
    assert_eq!(
        ws.reply(),
        (b"1 Lock Get Success: \xff\x00\n".to_vec(), false)
    );
}

#[test]
fn an_over_long_message_is_an_over_long_line() {
    let server = TestServer::with_config(|c| {
        c.websocket = vec!["127.0.0.1:0".into()];
        c.max_line = 10;
    });
    let mut ws = Ws::connect(&server, "/", None);
    assert_eq!(ws.cmd(&format!("g {}", "x".repeat(20))), "");
    assert_eq!(ws.cmd("hello 2").split(' ').next(), Some("2"));
    assert_eq!(
        ws.cmd(&format!("g {}", "x".repeat(20))),
        "0 Error: line too long\n"
    );
    assert_eq!(ws.cmd("g short\n"), "1 Lock Get Success: short\n");
}

/// Polls `i NAME` over TCP until it says the lock is free.
fn wait_until_free(server: &TestServer, name: &str) {
    let mut tcp = server.connect();
    let free = format!("0 Lock Not Locked: {name}\n");
    wait_until(&format!("{name} to be free"), || {
        tcp.cmd(&format!("i {name}")) == free
    });
}

#[test]
fn closing_orphans_the_locks() {
    let server = ws_server();
    // A clean close handshake.
    let mut ws = Ws::connect(&server, "/", None);
    ws.cmd("g one");
    ws.cmd("sg shared-one");
    ws.ws.close(None).expect("close");
    while ws.ws.read().is_ok() {}
    wait_until_free(&server, "one");
    // A dropped socket, no close frame.
    let mut ws = Ws::connect(&server, "/", None);
    ws.cmd("g two");
    drop(ws);
    wait_until_free(&server, "two");
    server.wait_for_stat("orphans", 2);
    server.wait_for_stat("shared_orphans", 1);
    server.wait_for_stat("connections", 1);
}

#[test]
fn protocol_2_and_waiting_in_line() {
    let server = ws_server();
    let mut holder = Ws::connect(&server, "/", None);
    let mut waiter = Ws::connect(&server, "/", None);
    assert!(waiter.cmd("hello 2").starts_with("2 lockd "));
    assert!(waiter.cmd("bogus").starts_with("0 Error: "));
    let q = waiter.cmd("q");
    assert!(q.ends_with("\n\n") && q.contains("waiting: 0\n"), "{q}");
    assert_eq!(holder.cmd("g x"), "1 Lock Get Success: x\n");
    waiter.send(Message::text("wg 5000 x"));
    server.wait_for_stat2("waiting", 1);
    assert_eq!(holder.cmd("r x"), "1 Lock Release Success: x\n");
    let (granted, _) = waiter.reply();
    let granted = String::from_utf8(granted).expect("utf-8");
    assert!(granted.ends_with(" Lock Get Success: x\n"), "{granted}");
    assert_ne!(granted.split(' ').next(), Some("0"), "{granted}");
    assert_eq!(waiter.cmd("wg 0 x"), granted, "already held: same token");
    assert_eq!(holder.cmd("wg 0 x"), "0 Lock Get Timeout: x\n");
}

#[test]
fn a_waiter_that_closes_leaves_the_line() {
    let server = ws_server();
    let mut holder = Ws::connect(&server, "/", None);
    let mut waiter = Ws::connect(&server, "/", None);
    holder.cmd("g x");
    waiter.send(Message::text("wg 60000 x"));
    server.wait_for_stat2("waiting", 1);
    drop(waiter);
    server.wait_for_stat2("waiting", 0);
    server.wait_for_stat("connections", 2);
}

#[test]
fn websocket_clients_count_toward_the_limit() {
    let server = TestServer::with_config(|c| {
        c.websocket = vec!["127.0.0.1:0".into()];
        c.max_connections = 1;
    });
    let mut ws = Ws::connect(&server, "/", None);
    assert_eq!(ws.cmd("ping"), "1 pong\n");
    let mut tcp = server.connect();
    assert_eq!(tcp.line(), b"0 Too Many Connections\n");
    // A WebSocket client past the limit gets an HTTP 503 with the line.
    let addr = ws_addr(&server);
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let request = format!("ws://{addr}/")
        .into_client_request()
        .expect("request");
    match tungstenite::client(request, stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 503);
            assert_eq!(
                response.body().as_deref(),
                Some(&b"0 Too Many Connections\n"[..])
            );
        }
        Err(other) => panic!("expected a 503, got {other:?}"),
        Ok(_) => panic!("a WebSocket client past the limit was let in"),
    }
}
