//! One command on one SSH channel. This task is the channel's only writer.

use std::sync::Arc;
use std::time::Duration;

use russh::Channel;
use russh::ChannelMsg;
use russh::server::Msg;
use tokio::io::AsyncWriteExt;

use crate::caller::Caller;
use crate::context::{Context, Io};
use crate::keys::Session;
use crate::remote;

/// Bytes of client input buffered on their way to the command.
const STDIN_BUFFER: usize = 256 * 1024;

/// How long a finished command waits for the client to answer its close.
const CLOSE_ANSWER: Duration = Duration::from_secs(10);

/// Says on the channel why its command does not run, and ends it (exit
/// status 1).
pub async fn refuse(channel: Channel<Msg>, why: impl std::fmt::Display) {
    let (_incoming, outgoing) = channel.split();
    let _ = outgoing.make_writer_ext(Some(1)).write_all(format!("error: {why}\n").as_bytes()).await;
    let _ = outgoing.exit_status(1).await;
    let _ = outgoing.eof().await;
    let _ = outgoing.close().await;
}

/// Runs `command` on `channel` to its end. When the key of `session` is
/// removed meanwhile, or may do less, the command ends as if its client had gone (a push's
/// git and hooks stop, `run`'s container goes, `logs --follow` stops), and
/// the client is told why.
pub async fn serve_exec(
    ctx: Arc<Context>,
    caller: Caller,
    command: String,
    channel: Channel<Msg>,
    terminal: Option<(u16, u16)>,
    session: Arc<Session>,
) {
    let (mut incoming, outgoing) = channel.split();
    let revoked = session.revoked();
    let client_gone = revoked.child_token();
    let (resized, terminal) = match terminal {
        Some(size) => {
            let (resized, watched) = tokio::sync::watch::channel(size);
            (Some(resized), Some(watched))
        }
        None => (None, None),
    };
    let (stdin, mut stdin_tx) = tokio::io::simplex(STDIN_BUFFER);
    let parsed = remote::parse(&command, &ctx.settings.git_remote());
    // A command that reads no input never drains it: the pump, blocked on a
    // full pipe, would stop seeing the client's close. Its input is dropped.
    let reads_input = parsed.as_ref().is_ok_and(remote::Parsed::reads_input);

    // Client → command. EOF closes the command's input; a closed channel or
    // a dropped connection means the client is gone.
    let mut pump = tokio::spawn({
        let client_gone = client_gone.clone();
        async move {
            let mut open = reads_input;
            if !open {
                let _ = stdin_tx.shutdown().await;
            }
            loop {
                match incoming.wait().await {
                    Some(ChannelMsg::Data { data }) if open => {
                        if stdin_tx.write_all(&data).await.is_err() {
                            open = false;
                        }
                    }
                    Some(ChannelMsg::Eof) if open => {
                        let _ = stdin_tx.shutdown().await;
                        open = false;
                    }
                    Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                        if let Some(resized) = &resized {
                            let _ = resized.send(crate::terminal::terminal_size(col_width, row_height));
                        }
                    }
                    Some(ChannelMsg::Close) | None => {
                        client_gone.cancel();
                        return;
                    }
                    Some(_) => {}
                }
            }
        }
    });

    let io = Io {
        stdin: Box::new(stdin),
        stdout: Box::new(outgoing.make_writer()),
        stderr: Box::new(outgoing.make_writer_ext(Some(1))),
        client_gone,
        terminal,
        own_terminal: false,
    };
    let mut status = remote::run(&ctx, &caller, parsed, &command, io).await;
    if revoked.is_cancelled() {
        let why = format!("error: {}\n", session.why());
        let _ = outgoing.make_writer_ext(Some(1)).write_all(why.as_bytes()).await;
        status = 1;
    }
    tracing::info!(status, "command ended");
    // In this order, and only after all output was written: the client stops
    // reading once it has the exit status and EOF.
    let _ = outgoing.exit_status(status).await;
    let _ = outgoing.eof().await;
    let _ = outgoing.close().await;
    // These are only queued for the connection to send. The client answers
    // the close once it has read everything before it; until then a gateway
    // that is shutting down, which waits for this task, must not go, or git
    // would report a push that went through as failed.
    if tokio::time::timeout(CLOSE_ANSWER, &mut pump).await.is_err() {
        pump.abort();
    }
}
