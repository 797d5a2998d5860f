//! What `serve` would refuse at start, refused while validating instead (so `check-config`
//! says so), and what is allowed but worth a warning.

use std::net::SocketAddr;

use imgate_transports::{ListenerConfig, TransportKind};

use super::{ConfigError, ConfigFile};

/// Errors found in the file as a whole.
pub(super) fn file(file: &ConfigFile) -> Result<(), ConfigError> {
    let shards = file.server.shards;
    if shards == 0 || !shards.is_power_of_two() {
        return Err(ConfigError(format!(
            "server.shards = {shards}: must be a power of two (1, 2, 4, … 64, …)"
        )));
    }
    let admin = &file.admin;
    let has_token =
        admin.token.is_some() || admin.token_env.is_some() || admin.token_file.is_some();
    if !admin.bind.ip().is_loopback() && !has_token {
        return Err(ConfigError(format!(
            "admin.bind = {}: not loopback, so admin.token (or token_env, token_file) is \
             required: the delivery API would be open to anyone who reaches it",
            file.admin.bind
        )));
    }
    if admin.demo && !admin.bind.ip().is_loopback() {
        return Err(ConfigError(format!(
            "admin.demo = true with admin.bind = {}: the demo page hands out login tokens \
             for any user name, so it is for loopback only",
            file.admin.bind
        )));
    }
    // Sockets of one protocol (TCP, or UDP for QUIC) cannot share a port.
    let mut bound: Vec<(String, bool, SocketAddr)> =
        vec![("admin.bind".to_owned(), false, file.admin.bind)];
    for (index, listener) in file.listener.iter().enumerate() {
        let udp = listener.transport == TransportKind::Quic;
        let key = format!("listener[{index}].bind ({})", listener.transport);
        if let Some((other, _, _)) = bound
            .iter()
            .find(|(_, other_udp, addr)| *other_udp == udp && clash(*addr, listener.bind))
        {
            return Err(ConfigError(format!(
                "{key} = {}: the same port as {other}",
                listener.bind
            )));
        }
        bound.push((key, udp, listener.bind));
    }
    Ok(())
}

/// Two binds that cannot both succeed (port 0 picks a free port, so never clashes).
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Allowed, but probably not what was meant.
pub(super) fn warnings(listeners: &[ListenerConfig]) -> Vec<String> {
    let mut warnings = Vec::new();
    if listeners.is_empty() {
        warnings.push(
            "no [[listener]]: clients cannot connect (only the admin API listens)".to_owned(),
        );
    }
    warnings
}
