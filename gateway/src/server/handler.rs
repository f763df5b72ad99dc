//! The russh handler: authenticates keys and forwards exec requests.

use std::collections::HashMap;
use std::sync::Arc;

use russh::keys::HashAlg;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span};

use super::startups::Startup;
use crate::caller::Caller;
use crate::context::Context;
use crate::keys::{self, AuthorizedKey};
use crate::remote::ParseError;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Ssh(#[from] russh::Error),
}

pub struct Connection {
    ctx: Arc<Context>,
    commands: TaskTracker,
    /// Its place among the connections not logged in; gone once it is.
    startup: Option<Startup>,
    logged_in: CancellationToken,
    key: Option<AuthorizedKey>,
    /// Followed once logged in: told when the key is removed.
    session: Option<Arc<keys::Session>>,
    /// Opened session channels waiting for their exec request.
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// The terminal size (columns, rows) each channel's pty request asked for.
    terminals: HashMap<ChannelId, (u16, u16)>,
}

impl Connection {
    pub fn new(ctx: Arc<Context>, commands: TaskTracker, startup: Startup, logged_in: CancellationToken) -> Self {
        Connection {
            ctx,
            commands,
            startup: Some(startup),
            logged_in,
            key: None,
            session: None,
            channels: HashMap::new(),
            terminals: HashMap::new(),
        }
    }

    async fn lookup(&self, key: &russh::keys::PublicKey) -> Option<AuthorizedKey> {
        self.ctx.known_keys.find(&self.ctx.store, key).await
    }

    /// Hands the channel to its own task, which runs `command` and owns the
    /// channel from then on; or, when the key that logged in is no longer
    /// allowed (or the store cannot say), to one that says so.
    async fn start(
        &mut self,
        id: ChannelId,
        command: Result<String, ParseError>,
        session: &mut Session,
    ) -> Result<(), HandlerError> {
        let (Some(key), Some(followed), Some(channel)) =
            (self.key.clone(), self.session.clone(), self.channels.remove(&id))
        else {
            session.channel_failure(id)?;
            return Ok(());
        };
        session.channel_success(id)?;
        let command = match command {
            Ok(command) => command,
            Err(err) => {
                let span = info_span!("command", key = %key.name);
                span.in_scope(|| info!(error = %err, "command refused"));
                tokio::spawn(super::channel::refuse(channel, err).instrument(span));
                return Ok(());
            }
        };
        let span = info_span!("command", key = %key.name, command = %crate::remote::shown(&command));
        let key = match self.ctx.known_keys.recheck(&self.ctx.store, &key).await {
            Ok(key) => key,
            Err(err) => {
                span.in_scope(|| info!(error = %err, "command refused"));
                tokio::spawn(super::channel::refuse(channel, err).instrument(span));
                return Ok(());
            }
        };
        self.key = Some(key.clone());
        let ctx = Arc::clone(&self.ctx);
        let terminal = self.terminals.remove(&id);
        let exec = super::channel::serve_exec(ctx, Caller::Key(key), command, channel, terminal, followed);
        self.commands.spawn(exec.instrument(span));
        Ok(())
    }
}

impl russh::server::Handler for Connection {
    type Error = HandlerError;

    // The user name is ignored: the key alone says who this is.
    async fn auth_publickey_offered(&mut self, _user: &str, offer: PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        if self.lookup(offer.public_key).await.is_some() {
            return Ok(Auth::Accept);
        }
        info!(fingerprint = %offer.public_key.fingerprint(HashAlg::default()), "unknown key refused at offer");
        Ok(Auth::reject())
    }

    async fn auth_publickey(&mut self, _user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        Ok(match self.lookup(key.public_key).await {
            Some(found) => {
                info!(key = %found.name, "authenticated");
                self.session = Some(self.ctx.known_keys.session(&found));
                self.key = Some(found);
                self.startup = None;
                self.logged_in.cancel();
                Auth::Accept
            }
            None => Auth::reject(),
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(&mut self, id: ChannelId, data: &[u8], session: &mut Session) -> Result<(), Self::Error> {
        let command = crate::remote::command_text(data).map(str::to_owned);
        self.start(id, command, session).await
    }

    /// `ssh host` with no command gets the help.
    async fn shell_request(&mut self, id: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        self.start(id, Ok(String::new()), session).await
    }

    /// Refused: a command's environment is nap's and its settings', never
    /// the client's (`SendEnv`, `SetEnv`). The command still runs.
    async fn env_request(
        &mut self,
        id: ChannelId,
        name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        debug!(variable = name, "refused a client's environment variable");
        session.channel_failure(id)?;
        Ok(())
    }

    /// Refused at once (`sftp`, `scp -s`): nap offers commands, not files.
    async fn subsystem_request(&mut self, id: ChannelId, name: &str, session: &mut Session) -> Result<(), Self::Error> {
        info!(subsystem = name, "refused a subsystem");
        session.channel_failure(id)?;
        Ok(())
    }

    /// Accepted so that `ssh -t` works; `run` gives its container a
    /// terminal of this size, and other commands do not use one.
    async fn pty_request(
        &mut self,
        id: ChannelId,
        _term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channels.contains_key(&id) {
            self.terminals.insert(id, crate::terminal::terminal_size(col_width, row_height));
        }
        session.channel_success(id)?;
        Ok(())
    }
}
