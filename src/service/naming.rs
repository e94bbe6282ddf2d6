//! Naming a service: its name (`SERVICE_NAME`, else the image's base name) and ID
//! (`SERVICE_ID`, else `<host>:<container>:<port>`), each one bounded key segment.

use super::meta::{shown, Meta};
use super::model::{Container, Port, Proto, MAX_SEGMENT_BYTES};

/// The service name of port `p`: `SERVICE_<p>_NAME`, else `SERVICE_NAME` or the image's
/// base name, suffixed `-<p>` when the container has `several` ports and nothing names
/// this one. A container created from an image ID needs `SERVICE_NAME`.
pub fn name(c: &Container, meta: &Meta, p: u16, several: bool) -> Result<String, String> {
    if let (None, Some(short)) = (meta.get(p, "NAME"), image_id(&c.image)) {
        return Err(format!(
            "created from image ID {short}, not an image name: set SERVICE_NAME to register it"
        ));
    }
    let (name, name_var) = match meta.get(p, "NAME") {
        Some((var, v)) if several && !meta.has_specific(p, "NAME") => (format!("{v}-{p}"), var),
        Some((var, v)) => (v.to_string(), var),
        None if several => (format!("{}-{p}", image_base(&c.image)), "image".to_string()),
        None => (image_base(&c.image).to_string(), "image".to_string()),
    };
    check_segment(&name).map_err(|why| {
        if name_var == "image" {
            format!(
                "service name {} derived from image {} {why}",
                shown(&name),
                shown(&c.image)
            )
        } else {
            format!("{name_var}={} {why}", shown(&name))
        }
    })?;
    Ok(name)
}

/// The service ID of `port`: `SERVICE_ID`, else `<hostname>:<container>:<port>`, with
/// `:udp` or `:sctp` after the port when it is not tcp.
pub fn id(c: &Container, hostname: &str, meta: &Meta, port: Port) -> Result<String, String> {
    let p = port.number;
    match meta.get(p, "ID") {
        Some((var, v)) => {
            check_segment(v).map_err(|why| format!("{var}={} {why}", shown(v)))?;
            Ok(v.to_string())
        }
        None => {
            let mut id = format!("{hostname}:{}:{p}", c.name);
            if port.proto != Proto::Tcp {
                id = format!("{id}:{}", port.proto);
            }
            check_segment(&id).map_err(|why| format!("service ID {} {why}", shown(&id)))?;
            Ok(id)
        }
    }
}

/// A service name or ID becomes one key segment: it must not escape its directory, and
/// it must be short enough that every key of the service fits etcd's request limit.
fn check_segment(s: &str) -> Result<(), String> {
    if s.is_empty() {
        Err("is empty".into())
    } else if s == "." || s == ".." {
        Err("is not a usable key segment".into())
    } else if s.contains('/') {
        Err("contains '/'".into())
    } else if s.chars().any(char::is_control) {
        Err("contains a control character".into())
    } else if s.len() > MAX_SEGMENT_BYTES {
        Err(format!(
            "is {} bytes long, more than the {MAX_SEGMENT_BYTES} a service name or ID may have",
            s.len()
        ))
    } else {
        Ok(())
    }
}

/// The short ID (12 hex digits) when `image` is an image ID (`sha256:<hex>`), which
/// names no service: a container created from an ID, not a name.
fn image_id(image: &str) -> Option<&str> {
    let hex = image.strip_prefix("sha256:")?;
    (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| &hex[..hex.len().min(12)])
}

/// The image's base name: no registry, path, tag or digest.
/// `registry:5000/team/nginx:1.25` -> `nginx`.
pub fn image_base(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::testing::{container, one};

    #[test]
    fn image_base_names() {
        for (image, base) in [
            ("nginx", "nginx"),
            ("nginx:1.25", "nginx"),
            ("registry:5000/team/nginx:1.25", "nginx"),
            ("team/nginx@sha256:abcd", "nginx"),
            ("localhost:5000/a/b/c:latest@sha256:00", "c"),
        ] {
            assert_eq!(image_base(image), base, "{image}");
        }
    }

    #[test]
    fn an_image_id_names_no_service() {
        let id = "sha256:0dee4c1501b61f460285a553e319b6a54ce84dc680648f9003f749f1813a86da";
        let bound = [(80, "tcp", "0.0.0.0", 32768)];
        let mut c = container("x", &[], &bound);
        c.image = id.into();
        let e = one(c).unwrap_err();
        assert!(
            e.contains("image ID 0dee4c1501b6") && e.contains("set SERVICE_NAME"),
            "{e}"
        );
        let mut c = container("x", &["SERVICE_80_NAME=web"], &bound);
        c.image = id.into();
        assert_eq!(one(c).unwrap().name, "web");
    }
}
