//! Relative paths in a config file are relative to the file's directory, not to wherever
//! the gateway was started.

use std::path::{Path, PathBuf};

use super::ConfigFile;
use super::file::Backend;

impl ConfigFile {
    /// Makes every relative path absolute against `base` (the config file's directory).
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        let fix = |path: &mut PathBuf| {
            if path.is_relative() && !base.as_os_str().is_empty() {
                *path = base.join(&*path);
            }
        };
        let fix_opt = |path: &mut Option<PathBuf>| {
            if let Some(path) = path {
                fix(path);
            }
        };
        fix_opt(&mut self.tls.cert);
        fix_opt(&mut self.tls.key);
        self.tls.ticket_keys.iter_mut().for_each(fix);
        fix_opt(&mut self.admin.token_file);
        fix(&mut self.server.data_dir);
        if let Some(cluster) = &mut self.cluster {
            fix_opt(&mut cluster.token_file);
            fix_opt(&mut cluster.password_file);
            fix_opt(&mut cluster.credentials_file);
            fix_opt(&mut cluster.tls_ca);
        }
        for app in &mut self.app {
            fix_opt(&mut app.auth.public_key_pem);
            fix_opt(&mut app.auth.secret_file);
            if let Backend::Webhook(webhook) = &mut app.backend {
                fix_opt(&mut webhook.secret_file);
            }
            if let Some(push) = &mut app.push {
                fix(&mut push.data_dir);
                if let Some(apns) = &mut push.apns {
                    for path in [
                        &mut apns.key,
                        &mut apns.cert,
                        &mut apns.cert_key,
                        &mut apns.ca,
                    ] {
                        fix_opt(path);
                    }
                }
                if let Some(fcm) = &mut push.fcm {
                    fix(&mut fcm.service_account);
                }
            }
        }
    }
}
