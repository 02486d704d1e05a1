//! A minimal blocking HTTP/1.1 client for the prediction API (`rgshield verify --suspect-url`):
//! `POST {url}/v1/predict` with JSON, over plain `http://` only (put a TLS-terminating proxy in
//! front of a remote suspect). No dependency beyond `std`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::error::{Error, Result};

/// `host:port` and the path prefix of an `http://` URL.
pub fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        Error::invalid(format!(
            "suspect URL '{url}': only http:// is supported (put a proxy in front for https)"
        ))
    })?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(Error::invalid(format!("suspect URL '{url}': no host")));
    }
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host, path.to_string()))
}

/// The classes a prediction API at `url` gives `inputs`, sent in batches of `batch`, with
/// `Authorization: Bearer` when `bearer` is given.
pub fn predict_classes(
    url: &str,
    inputs: &[Vec<f32>],
    batch: usize,
    bearer: Option<&str>,
) -> Result<Vec<usize>> {
    Ok(predict(url, inputs, batch, bearer)?.1)
}

/// The answers (`outputs`) and classes a prediction API at `url` gives `inputs` (see
/// [`predict_classes`]).
pub fn predict(
    url: &str,
    inputs: &[Vec<f32>],
    batch: usize,
    bearer: Option<&str>,
) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
    let (host, prefix) = split_url(url)?;
    let net = |err| Error::Net {
        addr: host.clone(),
        err,
    };
    let mut out = Vec::with_capacity(inputs.len());
    let mut outputs = Vec::with_capacity(inputs.len());
    for chunk in inputs.chunks(batch.max(1)) {
        let body = serde_json::to_string(&serde_json::json!({ "inputs": chunk }))
            .map_err(|e| Error::invalid(format!("encoding the request: {e}")))?;
        let mut s = TcpStream::connect(&host).map_err(net)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(net)?;
        let auth = bearer
            .map(|b| format!("Authorization: Bearer {b}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "POST {prefix}/v1/predict HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
             Content-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).map_err(net)?;
        s.write_all(body.as_bytes()).map_err(net)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).map_err(net)?;
        let text = String::from_utf8_lossy(&resp);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| Error::invalid(format!("{url}: the answer has no HTTP header")))?;
        let status = head.get(9..12).unwrap_or("");
        if status != "200" {
            return Err(Error::invalid(format!(
                "{url}/v1/predict answered {status}: {}",
                body.trim()
            )));
        }
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return Err(Error::invalid(format!(
                "{url}: chunked answers are not supported"
            )));
        }
        let v: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| Error::invalid(format!("{url}: the answer is not JSON: {e}")))?;
        let classes = v["classes"]
            .as_array()
            .filter(|a| a.len() == chunk.len())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{url}: the answer has no 'classes' list of {} entries",
                    chunk.len()
                ))
            })?;
        for c in classes {
            out.push(
                c.as_u64().ok_or_else(|| {
                    Error::invalid(format!("{url}: class {c} is not a whole number"))
                })? as usize,
            );
        }
        let rows: Vec<Vec<f32>> = serde_json::from_value(v["outputs"].clone()).map_err(|e| {
            Error::invalid(format!(
                "{url}: the answer's 'outputs' are not rows of numbers: {e}"
            ))
        })?;
        if rows.len() != chunk.len() {
            return Err(Error::invalid(format!(
                "{url}: {} outputs for {} inputs",
                rows.len(),
                chunk.len()
            )));
        }
        outputs.extend(rows);
    }
    Ok((outputs, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_and_prefix() {
        assert_eq!(
            split_url("http://127.0.0.1:8080").unwrap(),
            ("127.0.0.1:8080".into(), "".into())
        );
        assert_eq!(
            split_url("http://example.org/api/").unwrap(),
            ("example.org:80".into(), "/api".into())
        );
        assert!(split_url("https://x")
            .unwrap_err()
            .to_string()
            .contains("only http://"));
        assert!(split_url("http:///x").is_err());
    }
}
