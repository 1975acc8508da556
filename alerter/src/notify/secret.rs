//! Secrets in notifier options: given inline (usually as `"${ENV_VAR}"`) or read from a file
//! (`*_file`, for systemd credentials and mounted secrets), never both.

use wk_core::options::{Options, SecretSource};

/// Reads the secret `key` or the file named by `file_key`; `None` when neither is given.
/// An inline value still containing `${` means the environment variable was not set (the
/// substitution leaves unset variables verbatim) and is an error, not a literal password.
/// The file is read now, so that a missing file is a config error naming the line; its
/// trailing newline is dropped.
pub fn read(opts: &mut Options<'_, '_>, key: &str, file_key: &str) -> Option<String> {
    match opts.secret_source(key, file_key)? {
        SecretSource::Inline(v) => {
            if let Some(start) = v.find("${") {
                let name: String = v[start + 2..].chars().take_while(|c| *c != '}').collect();
                opts.error_at(key, format!("environment variable {name:?} is not set"));
                return None;
            }
            Some(v)
        }
        SecretSource::File(path) => match std::fs::read_to_string(&path) {
            Ok(s) => {
                let s = s.strip_suffix('\n').unwrap_or(&s);
                let s = s.strip_suffix('\r').unwrap_or(s);
                Some(s.to_owned())
            }
            Err(e) => {
                opts.error_at(file_key, format!("cannot read {path:?}: {e}"));
                None
            }
        },
    }
}
