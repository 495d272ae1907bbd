//! SDS file rotation, driven by the control loop's config check: every secret the running
//! config's TLS contexts take from a file is polled for a replaced secret file (an update,
//! counted in `sds.<name>.*`) or a replaced certificate, key or CA file it names (a reload of
//! the material, `key_rotation_failed` when it does not load). A good update swaps the secret's
//! material in place: contexts sign and verify with it from their next handshake, with no
//! snapshot rebuilt, no listener or pool touched and no open connection dropped; a bad one is
//! logged and the last good material keeps serving. Owns no parsing (`config::read_secret`) and
//! no material (`config::secrets`).

use crate::config::secrets::Change;
use crate::config::Bootstrap;

/// Applies every replaced secret of `b`; returns how many contexts' material changed.
pub fn check(b: &Bootstrap) -> usize {
    let mut rotated = 0;
    for secret in b.sds_secrets() {
        let Some(change) = secret.changed() else { continue };
        let started = std::time::Instant::now();
        let read = crate::config::read_secret(&secret.path, &secret.name, secret.kind);
        let what = match change {
            Change::Source => "update",
            Change::Files => "certificate reload",
        };
        match secret.apply(change, read) {
            Ok(true) => {
                rotated += 1;
                log::info!(
                    "sds {}: {what} applied from {} in {:?}",
                    secret.name,
                    secret.path.display(),
                    started.elapsed()
                );
            }
            Ok(false) => log::debug!("sds {}: {what} changes nothing", secret.name),
            Err(why) => {
                log::warn!("sds {}: {what} rejected, keeping the last good secret: {why}", secret.name)
            }
        }
    }
    rotated
}
