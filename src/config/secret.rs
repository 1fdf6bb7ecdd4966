//! Secret references (`env:NAME`, `file:PATH`, or a literal) and the resolved
//! secret bytes, which never print: `Debug` is redacted and nothing implements
//! `Display`.

use std::fmt;
use std::path::Path;

use secrecy::{ExposeSecret, SecretSlice};

/// A resolved secret. Cloning shares nothing mutable; the bytes are zeroed on drop.
#[derive(Clone)]
pub struct Secret(SecretSlice<u8>);

impl Secret {
    /// Wraps bytes that must never be logged.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(SecretSlice::from(bytes))
    }

    /// The raw bytes, for a MAC key or a constant-time comparison only.
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Where a secret comes from, as written in the config.
#[derive(Debug, PartialEq, Eq)]
pub enum SecretRef<'a> {
    /// `env:NAME`
    Env(&'a str),
    /// `file:PATH`
    File(&'a str),
    /// Anything else: the secret itself.
    Literal,
}

impl<'a> SecretRef<'a> {
    /// Where the value came from, for messages that must not show it.
    pub fn origin(&self) -> String {
        match self {
            SecretRef::Env(name) => format!("environment variable {name}"),
            SecretRef::File(path) => format!("file {path}"),
            SecretRef::Literal => "the config file".to_owned(),
        }
    }

    /// Classifies a config string without looking at its value.
    pub fn parse(spec: &'a str) -> Self {
        if let Some(name) = spec.strip_prefix("env:") {
            SecretRef::Env(name)
        } else if let Some(path) = spec.strip_prefix("file:") {
            SecretRef::File(path)
        } else {
            SecretRef::Literal
        }
    }
}

/// What is wrong with a secret's bytes that the one who set it did not
/// mean: a newline kept from `echo` or a Kubernetes secret, a space pasted
/// with it. Says nothing of the value.
pub fn stray_bytes(secret: &[u8]) -> Option<&'static str> {
    let blank = |b: &u8| b.is_ascii_whitespace();
    if secret.first().is_some_and(blank) || secret.last().is_some_and(blank) {
        Some("begins or ends with whitespace (a trailing newline, say)")
    } else if secret.iter().any(|b| b.is_ascii_control()) {
        Some("contains a control character")
    } else {
        None
    }
}

/// Resolves `spec`; the error names the variable or file, never a value.
/// Relative `file:` paths are taken from `base_dir` (the config file's folder).
pub fn resolve(
    spec: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base_dir: &Path,
) -> Result<Secret, String> {
    match SecretRef::parse(spec) {
        SecretRef::Env(name) => match env(name) {
            Some(value) if !value.is_empty() => Ok(Secret::new(value.into_bytes())),
            Some(_) => Err(format!("environment variable {name} is empty")),
            None => Err(format!("environment variable {name} is not set")),
        },
        SecretRef::File(path) => {
            let full = base_dir.join(path);
            match std::fs::read(&full) {
                Ok(mut bytes) => {
                    // Files written by editors and `echo` end in a newline that is not part of the secret.
                    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        bytes.pop();
                    }
                    if bytes.is_empty() {
                        Err(format!("secret file {} is empty", full.display()))
                    } else {
                        Ok(Secret::new(bytes))
                    }
                }
                Err(err) => Err(format!("cannot read secret file {}: {err}", full.display())),
            }
        }
        SecretRef::Literal if spec.is_empty() => Err("secret is empty".to_owned()),
        SecretRef::Literal => Ok(Secret::new(spec.as_bytes().to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stray_bytes_are_found_at_the_edges_and_control_bytes_anywhere() {
        assert_eq!(stray_bytes(b"s3cr3t"), None);
        assert_eq!(stray_bytes(b"two words"), None);
        for edged in [
            &b"s3cr3t\n"[..],
            b"s3cr3t\r\n",
            b" s3cr3t",
            b"s3cr3t\t",
            b"\ns3cr3t",
        ] {
            assert!(
                stray_bytes(edged).is_some_and(|why| why.contains("whitespace")),
                "{edged:?}"
            );
        }
        assert!(stray_bytes(b"s3\x07cr3t").is_some_and(|why| why.contains("control")));
        assert!(stray_bytes(b"s3\x7fcr3t").is_some_and(|why| why.contains("control")));
    }
}
