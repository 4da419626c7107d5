//! The hub's REST API as the CLI calls it: a base URL and a token, JSON in
//! and out, problem+json turned into an error that says what went wrong.

use serde_json::Value;
use std::time::Duration;

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// The hub answered with a problem (its status, code and text).
    Problem {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer (unreachable, timed out, not the hub).
    Transport(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Problem {
                status,
                code,
                message,
            } => write!(f, "{status} {code}: {message}"),
            CallError::Transport(why) => write!(f, "{why}"),
        }
    }
}

/// Reads a problem+json body into one message: its title and detail, and
/// each field error as `path: message`.
pub fn problem_message(status: u16, body: &Value) -> CallError {
    let code = body["code"].as_str().unwrap_or("error").to_owned();
    let mut message = body["detail"]
        .as_str()
        .or_else(|| body["title"].as_str())
        .unwrap_or("the hub refused the request")
        .to_owned();
    for error in body["errors"].as_array().into_iter().flatten() {
        let path = error["path"].as_str().unwrap_or("");
        let text = error["message"].as_str().unwrap_or("");
        message.push_str(&format!("\n  {path}: {text}"));
    }
    CallError::Problem {
        status,
        code,
        message,
    }
}

/// A hub to talk to.
pub struct Api {
    base: String,
    token: Option<String>,
    http: awc::Client,
}

/// The certificates an `https://` hub is checked against: the system's
/// bundle (`SSL_CERT_FILE`, or Debian's and Red Hat's usual places), and
/// `extra` (a hub's own CA or self-signed certificate).
pub(crate) fn tls_config(
    extra: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, CallError> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    let system = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
            ]
            .map(std::path::PathBuf::from),
        )
        .find(|path| path.exists());
    let mut read = |path: &std::path::Path, required: bool| -> Result<(), CallError> {
        let certificates = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>());
        match certificates {
            Ok(certificates) => {
                let (added, _) = roots.add_parsable_certificates(certificates);
                if required && added == 0 {
                    return Err(CallError::Transport(format!(
                        "{}: no certificate in it",
                        path.display()
                    )));
                }
                Ok(())
            }
            Err(error) if required => {
                Err(CallError::Transport(format!("{}: {error}", path.display())))
            }
            Err(_) => Ok(()),
        }
    };
    if let Some(path) = &system {
        read(path, false)?;
    }
    if let Some(path) = extra {
        read(path, true)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CallError::Transport(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Whether a URL's host is this machine.
fn loopback(base: &str) -> bool {
    let host = base
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    host == "localhost" || host.starts_with("127.") || base.contains("://[::1]")
}

impl Api {
    /// A hub at `base` (`http://` or `https://`; `ca_cert`: a certificate
    /// an https hub's is checked against besides the system's).
    pub fn new(
        base: &str,
        token: Option<String>,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Api, CallError> {
        let base = base.trim_end_matches('/').to_owned();
        let builder = awc::Client::builder().timeout(Duration::from_secs(30));
        let http = if base.starts_with("https://") {
            let connector =
                awc::Connector::new().rustls_0_23(std::sync::Arc::new(tls_config(ca_cert)?));
            builder.connector(connector).finish()
        } else if base.starts_with("http://") {
            if token.is_some() && !loopback(&base) {
                eprintln!(
                    "warning: {base} is plain http: the token crosses the network in the clear (use https://)"
                );
            }
            builder.finish()
        } else {
            return Err(CallError::Transport(format!(
                "--url {base:?}: the hub's http:// or https:// address"
            )));
        };
        Ok(Api { base, token, http })
    }

    /// `method` on `path` (from `/api/v1/...`), with a JSON body maybe.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let url = format!("{}{path}", self.base);
        let method = awc::http::Method::from_bytes(method.as_bytes())
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.insert_header(("Authorization", format!("Bearer {token}")));
        }
        let sent = match body {
            Some(body) => request.send_json(body).await,
            None => request.send().await,
        };
        let mut answer =
            sent.map_err(|e| CallError::Transport(format!("{url}: no answer from the hub ({e})")))?;
        let status = answer.status().as_u16();
        let bytes = answer
            .body()
            .limit(64 * 1024 * 1024)
            .await
            .map_err(|e| CallError::Transport(format!("{url}: {e}")))?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|_| {
                CallError::Transport(format!(
                    "{url}: answered {status} with something that is not JSON: is this a HotSwap hub?"
                ))
            })?
        };
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(problem_message(status, &value))
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, CallError> {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        self.call("POST", path, Some(body)).await
    }
}

/// A path segment or query value, percent-encoded.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_problem_reads_as_its_detail_and_field_errors() {
        let problem = problem_message(
            422,
            &json!({"code": "invalid_deployment", "title": "Unprocessable", "detail": "the plan is invalid",
                    "errors": [{"path": "/phases/0", "message": "between 0 and 100"}]}),
        );
        assert_eq!(
            problem.to_string(),
            "422 invalid_deployment: the plan is invalid\n  /phases/0: between 0 and 100"
        );
        assert_eq!(encode("a b/ü"), "a%20b%2F%C3%BC");
        assert!(loopback("http://127.0.0.1:8080") && loopback("http://localhost/x"));
        assert!(!loopback("http://hub.example.com:8080"));
    }
}
